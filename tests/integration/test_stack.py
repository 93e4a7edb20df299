"""`streamrec stack up|status|down` as a user runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis

from infra.stack import Stack, free_port

pytestmark = pytest.mark.integration


def _stack(run_dir: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamrec.app.cli", "stack", *args,
                           "--dir", str(run_dir)], capture_output=True, text=True, timeout=60,
                          env=env or dict(os.environ), check=False)


def test_up_twice_status_down_twice(tmp_path: Path) -> None:
    kafka, redis = free_port(), free_port()
    ports = ["--kafka-port", str(kafka), "--redis-port", str(redis)]
    try:
        first = _stack(tmp_path, "up", *ports)
        assert first.returncode == 0, first.stderr
        assert f"kafka: ready on 127.0.0.1:{kafka}" in first.stdout
        assert f"redis: ready on 127.0.0.1:{redis}" in first.stdout
        pids = (tmp_path / "kafka.pid").read_text(), (tmp_path / "redis.pid").read_text()

        second = _stack(tmp_path, "up", *ports)
        assert second.returncode == 0, second.stderr
        assert ((tmp_path / "kafka.pid").read_text(),
                (tmp_path / "redis.pid").read_text()) == pids, "up twice starts nothing new"

        status = _stack(tmp_path, "status")
        assert status.returncode == 0
        assert "ready" in status.stdout
    finally:
        down = _stack(tmp_path, "down")
    assert down.returncode == 0
    assert "kafka" in down.stdout and "redis" in down.stdout
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/status").read_text().find("zombie") >= 0

    again = _stack(tmp_path, "down")
    assert again.returncode == 0
    assert "nothing was running" in again.stdout
    status = _stack(tmp_path, "status")
    assert status.returncode == 1
    assert "kafka: stopped" in status.stdout


def test_stale_pid_file_is_cleaned_up(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "kafka.pid").write_text(str(dead.pid))
    (tmp_path / "redis.pid").write_text(str(dead.pid))
    try:
        up = _stack(tmp_path, "up", "--kafka-port", str(free_port()),
                    "--redis-port", str(free_port()))
        assert up.returncode == 0, up.stderr
        assert int((tmp_path / "kafka.pid").read_text()) != dead.pid
    finally:
        _stack(tmp_path, "down")


def test_taken_port_gives_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = _stack(tmp_path, "up", "--kafka-port", str(port), "--redis-port", str(free_port()))
    _stack(tmp_path, "down")
    assert up.returncode == 2
    assert f"kafka: port 127.0.0.1:{port} is already taken" in up.stderr


def test_missing_broker_binary_gives_a_clear_error(tmp_path: Path) -> None:
    env = dict(os.environ, CALF_TANSU_BIN=str(tmp_path / "no-such-tansu"))
    up = _stack(tmp_path, "up", "--kafka-port", str(free_port()),
                "--redis-port", str(free_port()), env=env)
    _stack(tmp_path, "down")
    assert up.returncode == 2
    assert "no Tansu binary" in up.stderr
    assert "Traceback" not in up.stderr


def test_redis_config_lines_override_the_stacks_own(tmp_path: Path) -> None:
    stack = Stack(tmp_path, redis_config=["appendfsync always",  # the stack's: everysec
                                          "auto-aof-rewrite-min-size 1gb"])
    redis_port = free_port()
    try:
        stack.up(kafka_port=free_port(), redis_port=redis_port)
        with Redis(port=redis_port) as client:
            assert client.config_get("appendfsync") == {"appendfsync": "always"}
            assert client.config_get("auto-aof-rewrite-min-size") == {
                "auto-aof-rewrite-min-size": str(1 << 30)}
            assert client.config_get("appendonly") == {"appendonly": "yes"}  # the stack's own
    finally:
        stack.down()


@pytest.mark.parametrize("line", ["", "  ", "appendonly yes\nsave 60 1"])
def test_a_redis_config_that_is_not_one_line_is_refused(tmp_path: Path, line: str) -> None:
    with pytest.raises(ValueError, match=r"redis_config: .* is not one redis\.conf line"):
        Stack(tmp_path, redis_config=[line])
