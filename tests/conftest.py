"""Fixtures: a real Tansu broker and a real redis-server on free ports, and worker processes.

Each test module that needs a pipeline gets its own topics, Redis prefix and consumer
group (uuid names), so modules never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from streamrec.kernel.settings import Settings, settings_env
from streamrec.state.dump import collect_state
from streamrec.state.keys import Keys

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class StackInfo:
    kafka_port: int
    redis_port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    run_dir = tmp_path_factory.mktemp("stack")
    services = Stack(run_dir)
    info = StackInfo(free_port(), free_port())
    services.up(kafka_port=info.kafka_port, redis_port=info.redis_port)
    try:
        yield info
    finally:
        services.down()


flatten_env = settings_env


@dataclass
class Pipeline:
    """Settings (own topics, prefix, group) plus the env that gives a subprocess the same."""

    settings: Settings
    env: dict[str, str]
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streamrec.app.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def start_worker(self, role: str = "all", timeout: float = 90) -> WorkerProcess:
        worker = self.launch_worker(role)
        worker.wait_ready(timeout)
        return worker

    def launch_worker(self, role: str = "all") -> WorkerProcess:
        """A worker process, started; :func:`start_workers` waits for several at once."""
        env = dict(self.env, STREAMREC_METRICS__PORT=str(free_port()))
        worker = WorkerProcess(env, self.tmp, role=role, name=f"worker{len(self.workers)}")
        self.workers.append(worker)
        return worker.start()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def start_workers(*wanted: tuple[Pipeline, str], timeout: float = 90) -> list[WorkerProcess]:
    """Start workers side by side, then wait until each is ready (a start is seconds of
    imports; one after the other, a test with several workers waits for each in turn)."""
    workers = [pipeline.launch_worker(role) for pipeline, role in wanted]
    for worker in workers:
        worker.wait_ready(timeout)
    return workers


def pipeline_settings(stack: StackInfo, **overrides: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "kafka": {"bootstrap": stack.bootstrap, "partitions": 2},
        "redis": {"url": stack.redis_url, "prefix": f"t{tag}:"},
        "topics": {name: f"{name}-{tag}" for name in (
            "view", "click", "purchase", "dlq", "user_updates", "recommendations",
            "model_updates", "erasure")},
        "worker": {"app_id": f"streamrec-{tag}"},
    }
    for section, extra in overrides.items():
        values.setdefault(section, {}).update(extra)
    return values


@pytest.fixture(scope="module")
def make_pipeline(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def make(**overrides: Any) -> Pipeline:
        values = pipeline_settings(stack, **overrides)
        tmp = tmp_path_factory.mktemp("pipeline")
        values["worker"]["data_dir"] = str(tmp / "faust")
        env = dict(os.environ, **flatten_env(values))
        env["PYTHONPATH"] = str(ROOT)
        pipeline = Pipeline(Settings.model_validate(values), env, tmp)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.stop()


class TopicReader:
    """A kafka-python consumer (not the project's code) reading one topic from the start."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer

        self._consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                       auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                       consumer_timeout_ms=200)
        self.messages: list[Any] = []

    def poll_until(self, done: Callable[[list[Any]], bool], timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not done(self.messages) and time.monotonic() < deadline:
            for records in self._consumer.poll(timeout_ms=100).values():
                self.messages.extend(records)
        return self.messages

    def values(self) -> list[Any]:
        return [orjson.loads(m.value) for m in self.messages]

    def close(self) -> None:
        self._consumer.close()


def kafka_producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)


def applied_count(settings: Settings) -> int:
    """Events applied to the state so far (``sr:stats``)."""
    async def read() -> int:
        redis = Redis.from_url(settings.redis.url)
        try:
            return int(await redis.hget(Keys(settings.redis.prefix).stats, "applied") or 0)
        finally:
            await redis.aclose()

    return asyncio.run(read())


def wait_applied(settings: Settings, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (applied := applied_count(settings)) < n:
        assert time.monotonic() < deadline, f"only {applied} of {n} events applied"
        time.sleep(0.2)


def state_of(settings: Settings) -> dict[str, Any]:
    """The canonical state dump of a pipeline, as a dict."""
    async def read() -> dict[str, Any]:
        redis = Redis.from_url(settings.redis.url)
        try:
            return await collect_state(redis, Keys(settings.redis.prefix),
                                       settings.state.popularity_half_life_s)
        finally:
            await redis.aclose()

    return asyncio.run(read())


def metric_sum(worker: WorkerProcess, name: str) -> float:
    """Sum of all series of a metric on a worker's /metrics."""
    import urllib.request

    port = worker.env["STREAMREC_METRICS__PORT"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))
