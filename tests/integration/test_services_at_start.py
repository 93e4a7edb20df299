"""A worker started before Kafka and Redis are up waits for them, saying so in one line,
and serves as soon as they come up; one-shot commands say the same line and exit at once.
A stack of its own, started late."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson
import pytest

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from recmodels.datasets import Interaction
from streamrec.kernel.settings import Settings
from streams.producer import publish
from tests.conftest import (
    ROOT,
    Pipeline,
    StackInfo,
    TopicReader,
    flatten_env,
    pipeline_settings,
)

pytestmark = pytest.mark.integration


def _pipeline(tmp: Path, info: StackInfo) -> Pipeline:
    values = pipeline_settings(info, worker={"data_dir": str(tmp / "faust")})
    # no HTTP: a port picked now may be taken by the time the waiting worker binds it
    env = dict(os.environ, **flatten_env(values), PYTHONPATH=str(ROOT),
               STREAMREC_METRICS__PORT="0")
    return Pipeline(Settings.model_validate(values), env, tmp)


@pytest.mark.timeout(300)
def test_a_worker_started_before_the_stack_waits_then_serves_within_seconds(
        tmp_path: Path) -> None:
    info = StackInfo(free_port(), free_port())
    pipeline = _pipeline(tmp_path, info)
    worker = WorkerProcess(pipeline.env, tmp_path, name="early").start()
    stack = Stack(tmp_path / "stack")
    reader: TopicReader | None = None
    try:
        time.sleep(10)
        assert worker.running, worker.log_tail()
        log = worker.log_path.read_text()
        wait_line = (f"waiting: Kafka at {info.bootstrap} (STREAMREC_KAFKA__BOOTSTRAP) is not "
                     "reachable")
        assert wait_line in log, log[-2000:]

        stack.up(kafka_port=info.kafka_port, redis_port=info.redis_port)
        up_at = time.monotonic()
        worker.wait_ready(60)
        now = int(time.time() * 1000)
        events = [Interaction(f"e{i}", "early-bird", item, kind, now + i)
                  for i, (item, kind) in enumerate([("i1", "view"), ("i2", "click"),
                                                    ("i2", "purchase")])]
        asyncio.run(publish(pipeline.settings, events, len(events)))
        reader = TopicReader(info.bootstrap, pipeline.settings.topics.recommendations)
        reader.poll_until(lambda ms: any(orjson.loads(m.value)["user_id"] == "early-bird"
                                         for m in ms), timeout=60)
        served_after = time.monotonic() - up_at
        assert any(v["user_id"] == "early-bird" for v in reader.values()), worker.log_tail()
        print(f"first list {served_after:.1f} s after the stack was up")
        assert served_after < 10, f"first list {served_after:.1f} s after the stack was up"

        log = worker.log_path.read_text()
        # one line per service awaited, not one per retry (Redis may come up a moment
        # after Kafka: then it has its own line)
        assert log.count("waiting: Kafka at ") == 1, log[-3000:]
        assert log.count("waiting: Redis at ") <= 1, log[-3000:]
        assert f"Kafka at {info.bootstrap} is up" in log
        assert "Traceback" not in log, log[-3000:]
    finally:
        if reader is not None:
            reader.close()
        worker.stop()
        stack.down()


def test_one_shot_commands_name_the_address_and_setting_and_exit_at_once(
        tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, StackInfo(free_port(), free_port()))
    for argv, service, address, setting in (
            (["state", "dump"], "Redis", pipeline.settings.redis.url,
             "STREAMREC_REDIS__URL"),
            (["produce", "synthetic", "--format", "synthetic", "--limit", "3"], "Kafka",
             pipeline.settings.kafka.bootstrap, "STREAMREC_KAFKA__BOOTSTRAP")):
        started = time.monotonic()
        done = pipeline.cli(*argv, timeout=60)
        assert time.monotonic() - started < 20
        assert done.returncode == 2, done.stderr
        assert f"{service} at {address} ({setting}) is not reachable" in done.stderr
        assert "Traceback" not in done.stderr + done.stdout


def test_a_long_running_command_gives_up_after_its_connect_timeout(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, StackInfo(free_port(), free_port()))
    started = time.monotonic()
    done = pipeline.cli("worker", "--connect-timeout", "3", timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 2 and 3 <= took < 30, (took, done.stderr)
    assert done.stderr.count("waiting: Kafka at ") == 1
    assert "gave up after 3 s (--connect-timeout)" in done.stderr
    assert "Traceback" not in done.stderr

