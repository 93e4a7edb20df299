"""Who the HTTP API lets in (pure: the rule, without a server)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from serving.web import Access


def _request(authorization: str | None) -> Any:
    return SimpleNamespace(headers={} if authorization is None else
                           {"Authorization": authorization})


def test_without_a_token_everything_is_open() -> None:
    assert Access().allows(_request(None))
    assert Access().allows(_request("Bearer anything"), health=True)


def test_with_a_token_only_requests_that_carry_it_exactly() -> None:
    access = Access("s3cret")
    assert access.allows(_request("Bearer s3cret"))
    for header in (None, "", "Bearer s3cre", "Bearer s3cret ", "bearer s3cret", "s3cret",
                   "Basic s3cret"):
        assert not access.allows(_request(header)), header


def test_health_and_metrics_are_open_unless_told_otherwise() -> None:
    assert Access("s3cret").allows(_request(None), health=True)
    closed = Access("s3cret", open_health=False)
    assert not closed.allows(_request(None), health=True)
    assert closed.allows(_request("Bearer s3cret"), health=True)
