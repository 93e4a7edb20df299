"""The embedded broker restarts empty: the worker survives, topics come back, events flow."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import orjson
import pytest

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from streamrec.kernel.settings import Settings
from tests.conftest import (
    ROOT,
    StackInfo,
    TopicReader,
    flatten_env,
    kafka_producer,
    pipeline_settings,
    state_of,
)

pytestmark = pytest.mark.integration


def _roundtrip(bootstrap: str, topics: dict[str, str], user: str, timeout: float) -> bool:
    reader = TopicReader(bootstrap, topics["recommendations"])
    producer = kafka_producer(bootstrap)
    try:
        producer.send(topics["view"], key=user.encode(), value=orjson.dumps(
            {"user_id": user, "item_id": "x", "type": "view"}))
        producer.flush()
        got = reader.poll_until(
            lambda ms: any(orjson.loads(m.value)["user_id"] == user for m in ms), timeout)
        return any(orjson.loads(m.value)["user_id"] == user for m in got)
    finally:
        reader.close()
        producer.close()


def test_worker_survives_a_broker_restart(tmp_path: Path) -> None:
    info = StackInfo(free_port(), free_port())
    stack = Stack(tmp_path / "stack")
    stack.up(kafka_port=info.kafka_port, redis_port=info.redis_port)
    # dedupe off: only the reset of the lost topics' watermarks lets the new offsets
    # (which start at 0 again, below the old watermarks) be applied
    values = pipeline_settings(info, worker={"topic_check_interval_s": 1.0,
                                             "data_dir": str(tmp_path / "faust")},
                               state={"dedupe_events": 0})
    env = dict(os.environ, **flatten_env(values), PYTHONPATH=str(ROOT),
               STREAMREC_METRICS__PORT="0")
    worker = WorkerProcess(env, tmp_path)
    try:
        worker.start().wait_ready()
        assert _roundtrip(info.bootstrap, values["topics"], "before", 10)

        stack.stop_service("kafka")
        time.sleep(2)
        stack.up(kafka_port=info.kafka_port, redis_port=info.redis_port)
        deadline = time.monotonic() + 90
        # the worker recreates the lost topics (resetting their watermarks) before anything
        # is published to them, as a producer would otherwise create them itself
        while "recreated" not in worker.log_tail(50_000) and time.monotonic() < deadline:
            time.sleep(0.2)
        ok = False
        while not ok and time.monotonic() < deadline:
            user = f"after-{uuid.uuid4().hex}"
            try:
                ok = _roundtrip(info.bootstrap, values["topics"], user, 8)
            except Exception:  # the broker may still be coming up
                time.sleep(1)
        assert ok, worker.log_tail()
        assert worker.running
        assert "recreated" in worker.log_tail(50_000)
        users = state_of(Settings.model_validate(values))["users"]
        assert users[user]["sequence"] == ["x"], "the event after the restart was applied"
        assert users["before"]["sequence"] == ["x"]
    finally:
        worker.stop()
        stack.down()
