"""Redis with a password: the worker authenticates, and the password never shows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from tests.conftest import (
    ROOT,
    StackInfo,
    TopicReader,
    flatten_env,
    kafka_producer,
    pipeline_settings,
)

pytestmark = pytest.mark.integration

PASSWORD = f"pw-{uuid.uuid4().hex}"


def test_password_is_used_and_never_printed(tmp_path: Path) -> None:
    kafka_port, redis_port = free_port(), free_port()
    stack_dir = tmp_path / "stack"
    values = pipeline_settings(StackInfo(kafka_port, redis_port))
    values["redis"]["password"] = PASSWORD
    values["worker"]["data_dir"] = str(tmp_path / "faust")
    env = dict(os.environ, **flatten_env(values), PYTHONPATH=str(ROOT),
               STREAMREC_METRICS__PORT=str(free_port()), STREAMREC_LOG_LEVEL="DEBUG")
    outputs: list[str] = []

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "streamrec.app.cli", *args], env=env,
                                capture_output=True, text=True, timeout=90, check=False)
        outputs.append(result.stdout + result.stderr)
        return result

    up = cli("stack", "up", "--dir", str(stack_dir), "--kafka-port", str(kafka_port),
             "--redis-port", str(redis_port))
    assert up.returncode == 0, up.stderr
    worker = WorkerProcess(env, tmp_path, role="all")
    try:
        # Redis really requires the password
        from redis import Redis
        from redis.exceptions import AuthenticationError, ResponseError

        with pytest.raises((AuthenticationError, ResponseError)):
            Redis(port=redis_port).set("x", 1)

        worker.start().wait_ready()
        topics = values["topics"]
        reader = TopicReader(f"127.0.0.1:{kafka_port}", topics["recommendations"])
        producer = kafka_producer(f"127.0.0.1:{kafka_port}")
        producer.send(topics["view"], key=b"sec-user", value=orjson.dumps(
            {"user_id": "sec-user", "item_id": "i1", "type": "view", "ts": 1}))
        producer.flush()
        got = reader.poll_until(lambda ms: len(ms) > 0, 15)
        assert got, "the worker read and wrote Redis with the configured password"
        reader.close()
        producer.close()
        assert cli("stack", "status", "--dir", str(stack_dir)).returncode == 0
        assert cli("state", "dump").returncode == 0
        cli("tail", topics["recommendations"], "--from-beginning", "--limit", "1",
            "--idle-exit", "5")
    finally:
        worker.stop()
        cli("stack", "down", "--dir", str(stack_dir))
        Stack(stack_dir).down()
    time.sleep(0.2)
    logs = worker.log_path.read_text(errors="replace")
    assert "sec-user" in "".join(outputs), "the dump and tail really ran"
    for text in [*outputs, logs, *(p.read_text(errors="replace")
                                   for p in stack_dir.glob("*.log"))]:
        assert PASSWORD not in text
