"""The one settings class: env prefix, nesting, secrets."""

from __future__ import annotations

import pytest

from streamrec.kernel.settings import Settings


def test_nested_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA__BOOTSTRAP", "10.0.0.1:9093")
    monkeypatch.setenv("STREAMREC_REDIS__URL", "redis://h:1/2")
    monkeypatch.setenv("STREAMREC_STATE__WEIGHTS__PURCHASE", "8")
    s = Settings()
    assert s.kafka.bootstrap == "10.0.0.1:9093"
    assert s.redis.url == "redis://h:1/2"
    assert s.state.weights.purchase == 8


def test_defaults() -> None:
    s = Settings()
    assert s.kafka.bootstrap == "127.0.0.1:9092"
    assert s.redis.url == "redis://127.0.0.1:6379/0"
    assert s.metrics.port == 9464


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_REDIS__PASSWORD", "hunter2")
    monkeypatch.setenv("STREAMREC_KAFKA__SASL_PASSWORD", "hunter3")
    s = Settings()
    assert s.redis.password is not None
    assert s.redis.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter3" not in repr(s)
    assert "hunter2" not in s.model_dump_json()


def test_bad_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_SERVING__TOP_N", "0")
    with pytest.raises(ValueError, match="top_n"):
        Settings()
