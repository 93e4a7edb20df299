"""Chaos check of effectively-once state.

Replays N events, SIGKILLs the stream worker (ingest + state) at random moments K times,
restarting it each time, optionally stops Redis for a while mid-replay, then compares
``state dump`` of the result with that of a clean uninterrupted run of the same events.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from recmodels.datasets import Interaction
from streamrec.kernel.errors import StreamrecError
from streamrec.kernel.settings import Settings, settings_env
from streamrec.state.dump import collect_state
from streamrec.state.keys import Keys
from streams.producer import publish

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    name: str
    seconds: float
    applied: int
    kills: list[int] = field(default_factory=list)  # events applied when each kill landed
    redis_outage_s: float = 0.0
    redis_crashes: list[int] = field(default_factory=list)  # events applied at each crash
    lost_on_crash: list[int] = field(default_factory=list)  # applied events Redis lost


@dataclass
class Verdict:
    seed: int
    identical: bool
    differing_keys: list[str]
    clean: RunReport
    chaos: RunReport


def _settings_values(bootstrap: str, redis_url: str, tag: str,
                     batch_size: int) -> dict[str, Any]:
    return {
        "state": {"batch_size": batch_size},
        "kafka": {"bootstrap": bootstrap, "partitions": 4},
        "redis": {"url": redis_url, "prefix": f"c{tag}:"},
        "topics": {name: f"{name}-{tag}" for name in (
            "view", "click", "purchase", "dlq", "user_updates", "recommendations",
            "model_updates", "erasure")},
        "worker": {"app_id": f"chaos-{tag}"},
    }


def diff_states(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Paths (section/key) whose values differ between two state dumps."""
    differing = []
    for section in sorted(set(a) | set(b)):
        left, right = a.get(section), b.get(section)
        if isinstance(left, dict) and isinstance(right, dict):
            differing += [f"{section}/{key}" for key in sorted(set(left) | set(right))
                          if left.get(key) != right.get(key)]
        elif left != right:
            differing.append(section)
    return differing


class ChaosRunner:
    def __init__(self, events: list[Interaction], run_dir: Path | None = None,
                 timeout_s: float = 600.0, batch_size: int = 50) -> None:
        """``batch_size``: events per state batch; small enough that a replay takes many
        batches, so kills land in the middle of it."""
        self.events = events
        self.batch_size = batch_size
        self._own_dir = run_dir is None
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="streamrec-chaos-"))
        self.timeout_s = timeout_s
        self.stack = Stack(self.run_dir / "stack")
        self.kafka_port = free_port()
        self.redis_port = free_port()
        self._clean: dict[int, tuple[RunReport, dict[str, Any]]] = {}

    def __enter__(self) -> ChaosRunner:
        self.stack.up(kafka_port=self.kafka_port, redis_port=self.redis_port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.down()
        if self._own_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _run(self, name: str, kills: int, rng: random.Random, redis_outage_s: float,
             redis_crashes: int = 0, lose_writes: bool = False, consumer: str = "batch"
             ) -> tuple[RunReport, dict[str, Any]]:
        tag = uuid.uuid4().hex[:8]
        values = _settings_values(f"127.0.0.1:{self.kafka_port}", self.redis_url, tag,
                                  self.batch_size)
        values["worker"]["consumer"] = consumer
        work = self.run_dir / f"{name}-{tag}"
        values["worker"]["data_dir"] = str(work / "faust")
        settings = Settings.model_validate(values)
        env = dict(os.environ, **settings_env(values), STREAMREC_METRICS__PORT="0")
        asyncio.run(publish(settings, self.events, len(self.events)))
        report = RunReport(name=name, seconds=0.0, applied=0)
        worker = WorkerProcess(env, work, role="stream", name="stream")
        start = time.monotonic()
        try:
            worker.start().wait_ready()
            n = len(self.events)
            # kills in the first 60%: a restarted worker catches up in a burst, and a kill
            # meant for the last events would land after the end (on a loaded machine too)
            for threshold in sorted(rng.sample(range(1, int(n * 0.6)), kills)):
                self._wait_applied(settings, threshold, worker, poll_s=0.01)
                worker.kill()
                report.kills.append(self._applied(settings))
                log.info("run=%s killed the stream worker at %d applied events", name,
                         report.kills[-1])
                worker.start().wait_ready()
            if redis_outage_s > 0:
                self._wait_applied(settings, rng.randrange(1, len(self.events) // 2), worker,
                                   poll_s=0.01)
                self.stack.stop_service("redis")
                log.info("run=%s redis stopped for %.0f s", name, redis_outage_s)
                time.sleep(redis_outage_s)
                self.stack.up(kafka_port=self.kafka_port, redis_port=self.redis_port)
                report.redis_outage_s = redis_outage_s
            n = len(self.events)
            for threshold in sorted(rng.sample(range(n // 10, int(n * 0.7)), redis_crashes)):
                self._wait_applied(settings, threshold, worker, poll_s=0.01)
                self._crash_redis(settings, worker, report, lose_writes, rng)
                log.info("run=%s redis crashed at %d applied events, lost %d", name,
                         report.redis_crashes[-1], report.lost_on_crash[-1])
            report.applied = self._wait_applied(settings, len(self.events), worker)
            time.sleep(1.0)  # anything applied twice would show up now
            report.applied = self._applied(settings)
            report.seconds = round(time.monotonic() - start, 2)
        finally:
            worker.stop()
        return report, asyncio.run(self._collect(settings))

    def _crash_redis(self, settings: Settings, worker: WorkerProcess, report: RunReport,
                     lose_writes: bool, rng: random.Random) -> None:
        """SIGKILL Redis and restart it from its append-only file. ``lose_writes``: from a
        copy of that file taken a while before, as a machine crash with ``appendfsync
        everysec`` loses what was acknowledged but not yet on disk (a process kill alone
        loses nothing the kernel already has)."""
        aof = [p for p in self.stack.run_dir.iterdir() if p.name.startswith("appendonly")]
        copy = self.run_dir / "aof-copy"
        applied_at_copy = self._applied(settings)
        if lose_writes:
            shutil.rmtree(copy, ignore_errors=True)
            copy.mkdir()
            for path in aof:
                (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy / path.name)
            self._wait_applied(settings, applied_at_copy + rng.randrange(200, 1000), worker,
                               poll_s=0.01)
        report.redis_crashes.append(self._applied(settings))
        self.stack.stop_service("redis", crash=True)
        # the worker is frozen while Redis comes back, so that what the restart lost is read
        # before the worker applies those events again (it would otherwise race the reading)
        with worker.paused():
            if lose_writes:
                for path in aof:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
                for path in copy.iterdir():
                    (shutil.copytree if path.is_dir() else shutil.copy2)(
                        path, self.stack.run_dir / path.name)
            self.stack.up(kafka_port=self.kafka_port, redis_port=self.redis_port)
            report.lost_on_crash.append(report.redis_crashes[-1] - self._applied(settings))

    def _applied(self, settings: Settings) -> int:
        async def read() -> int:
            redis = Redis.from_url(self.redis_url)
            try:
                value = await redis.hget(Keys(settings.redis.prefix).stats, "applied")
            finally:
                await redis.aclose()
            return int(value or 0)

        try:
            return asyncio.run(read())
        except OSError:
            return -1

    def _wait_applied(self, settings: Settings, n: int, worker: WorkerProcess,
                      poll_s: float = 0.2) -> int:
        deadline = time.monotonic() + self.timeout_s
        applied = 0
        while time.monotonic() < deadline:
            applied = self._applied(settings)
            if applied >= n:
                return applied
            if not worker.running:
                raise StreamrecError(f"stream worker died:\n{worker.log_tail()}")
            time.sleep(poll_s)
        raise StreamrecError(f"only {applied} of {n} events applied in {self.timeout_s:.0f} s; "
                             f"the stream worker's log ends:\n{worker.log_tail()}")

    async def _collect(self, settings: Settings) -> dict[str, Any]:
        redis = Redis.from_url(self.redis_url)
        try:
            return await collect_state(redis, Keys(settings.redis.prefix),
                                       settings.state.popularity_half_life_s)
        finally:
            await redis.aclose()

    def check(self, seed: int, kills: int, redis_outage_s: float = 0.0,
              redis_crashes: int = 0, lose_writes: bool = False,
              consumer: str = "batch") -> Verdict:
        """A clean run (batch consumer; once per seed, kept for the next checks) against a
        run with the faults, whose worker consumes with ``consumer`` (worker.consumer)."""
        if seed not in self._clean:
            self._clean[seed] = self._run("clean", 0, random.Random(seed), 0.0)
        clean, clean_state = self._clean[seed]
        chaos, chaos_state = self._run("chaos", kills, random.Random(seed), redis_outage_s,
                                       redis_crashes, lose_writes, consumer)
        differing = diff_states(clean_state, chaos_state)
        return Verdict(seed=seed, identical=not differing, differing_keys=differing[:100],
                       clean=clean, chaos=chaos)
