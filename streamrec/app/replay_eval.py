"""``streamrec replay-eval``: prequential evaluation through the live pipeline.

1. The events before the replayed part are published unthrottled and folded into the
   state; the trainer then trains SASRec on exactly those sequences (never on the part
   that is evaluated) and publishes it.
2. The replayed part is published in order at ``--rate``. One stream worker applies it;
   one serving worker per source (own consumer group, own output topic) publishes lists:
   ``hybrid`` with the blend the trainer fitted on its own holdout (``serving.blend =
   fitted``), the single sources with their fixed weights (``serving.blend = settings``).
3. Each list, triggered by a user's event k, is scored against the user's event k + 1
   when the list was published before that event was: HR@10, NDCG@10 (1 / log2(rank + 2)),
   coverage (distinct items in the scored lists / catalogue) and freshness (event
   published -> list published, p50 and p99).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from recmodels.adapters import BadRows, Layout, timeline
from recmodels.blend_fit import relative_gain
from recmodels.datasets import Interaction
from streamrec.app.trainer import Trainer
from streamrec.kernel.clients import aiokafka_options
from streamrec.kernel.errors import DataError, StreamrecError
from streamrec.kernel.settings import Settings, get_settings, settings_env
from streamrec.state.keys import Keys
from streams.producer import EventPublisher, publish

log = logging.getLogger(__name__)

SOURCES: dict[str, tuple[float, float, float]] = {  # markov, sequence, trending weights
    "hybrid": (1.0, 1.0, 0.1),  # only when the model has no fitted blend
    "markov": (1.0, 0.0, 0.0),
    "sequence": (0.0, 1.0, 0.0),
    "popularity": (0.0, 0.0, 0.0),  # only the popular fill
}


@dataclass
class Published:
    event: Interaction
    sent_ms: float


def load_events(data: str, fmt: str | Layout) -> list[Interaction]:
    """The data file's events in time order; bad rows are reported on stderr."""
    bad = BadRows()
    events = timeline(data, fmt, bad)
    if report := bad.report(data):
        print(report, file=sys.stderr)
    return events


def score_lists(replayed: list[Published], lists: dict[str, dict[str, Any]], n_items: int,
                k: int = 10) -> dict[str, float]:
    """Prequential metrics of the lists (by trigger event_id) against each next event."""
    next_of: dict[str, Published] = {}
    last_by_user: dict[str, Published] = {}
    for p in replayed:
        previous = last_by_user.get(p.event.user_id)
        if previous is not None:
            next_of[previous.event.event_id] = p
        last_by_user[p.event.user_id] = p
    hits, gains, scored = 0, 0.0, 0
    seen_items: set[str] = set()
    freshness = []
    sent = {p.event.event_id: p.sent_ms for p in replayed}
    for event_id, message in lists.items():
        if event_id in sent:
            freshness.append(message["generated_at"] - sent[event_id])
        follower = next_of.get(event_id)
        if follower is None or message["generated_at"] > follower.sent_ms:
            continue
        items = [it["item_id"] for it in message["items"][:k]]
        seen_items.update(items)
        scored += 1
        if follower.event.item_id in items:
            hits += 1
            gains += 1 / math.log2(items.index(follower.event.item_id) + 2)
    fresh = np.array(freshness or [math.nan]) / 1000
    return {"hr@10": hits / scored if scored else 0.0,
            "ndcg@10": gains / scored if scored else 0.0,
            "coverage": len(seen_items) / n_items if n_items else 0.0,
            "scored_lists": scored, "lists": len(lists),
            "freshness_p50_s": float(np.nanpercentile(fresh, 50)),
            "freshness_p99_s": float(np.nanpercentile(fresh, 99))}


def hybrid_gains(report: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Relative gain of the hybrid over each single source, per metric."""
    if "hybrid" not in report:
        return {}
    hybrid = report["hybrid"]
    return {source: {m: relative_gain(hybrid[m], row[m]) for m in ("hr@10", "ndcg@10")}
            for source, row in report.items() if source != "hybrid"}


class ReplayEval:
    def __init__(self, events: list[Interaction], replay: int, rate: float,
                 sources: list[str], train_budget_s: float) -> None:
        if not 0 < replay < len(events):
            raise DataError(f"--limit {replay}: must be between 1 and {len(events) - 1}")
        self.before, self.replayed = events[:-replay], events[-replay:]
        self.rate = rate
        self.sources = sources
        self.train_budget_s = train_budget_s
        self.run_dir = Path(tempfile.mkdtemp(prefix="streamrec-replay-eval-"))
        self.kafka_port, self.redis_port = free_port(), free_port()
        self.stack = Stack(self.run_dir / "stack")

    def _values(self, source: str | None = None) -> dict[str, Any]:
        values: dict[str, Any] = {
            "kafka": {"bootstrap": f"127.0.0.1:{self.kafka_port}", "partitions": 4},
            "redis": {"url": f"redis://127.0.0.1:{self.redis_port}/0"},
            "worker": {"app_id": "replay-eval", "data_dir": str(self.run_dir / "faust")},
            "state": {"allowed_lateness_s": -1},
        }
        if source is not None:
            wm, ws, wt = SOURCES[source]
            values["worker"]["app_id"] = f"replay-eval-{source}"
            values["topics"] = {"recommendations": f"recommendations-{source}"}
            values["serving"] = {"weight_markov": wm, "weight_sequence": ws,
                                 "weight_trending": wt,
                                 "blend": "fitted" if source == "hybrid" else "settings"}
            values["worker"]["offset_reset"] = "latest"  # skip the warm-up's updates
        return values

    def run(self) -> dict[str, Any]:
        # SIGTERM ends the run like Ctrl-C: workers and the stack are stopped in `finally`
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        self.stack.up(kafka_port=self.kafka_port, redis_port=self.redis_port)
        workers: list[WorkerProcess] = []
        try:
            base = Settings.model_validate(self._values())
            env = dict(os.environ, **settings_env(self._values()), STREAMREC_METRICS__PORT="0")
            stream = WorkerProcess(env, self.run_dir, role="stream", name="stream")
            workers.append(stream.start())
            stream.wait_ready()
            log.info("replay-eval: folding %d earlier events into the state", len(self.before))
            asyncio.run(publish(base, self.before, len(self.before)))
            self._wait_applied(base, len(self.before), stream)
            trained = asyncio.run(self._train(base))
            for source in self.sources:
                values = self._values(source)
                w = WorkerProcess(dict(os.environ, **settings_env(values),
                                       STREAMREC_METRICS__PORT="0"),
                                  self.run_dir, role="serving", name=f"serving-{source}")
                workers.append(w.start())
            for w in workers[1:]:
                w.wait_ready()
            time.sleep(3)  # serving workers load the published model
            lists = asyncio.run(self._replay_and_collect(base))
            n_items = asyncio.run(self._n_items(base))
            report = {source: score_lists(self.published, lists[source], n_items)
                      for source in self.sources}
            return {"events_before": len(self.before), "events_replayed": len(self.replayed),
                    "rate": self.rate, "items": n_items, "model": trained, "sources": report,
                    "hybrid_gain": hybrid_gains(report)}
        finally:
            for w in workers:
                w.stop()
            self.stack.down()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    async def _train(self, settings: Settings) -> dict[str, Any]:
        """One trainer round; trainer settings from the environment (threads, blend fit)
        except the time budget and the minimum number of users."""
        settings.trainer = get_settings().trainer.model_copy(
            update={"time_budget_s": self.train_budget_s, "min_users": 1})
        result = await Trainer(settings).run_once()
        if result.outcome != "published":
            raise StreamrecError(f"replay-eval: trainer did not publish ({result.outcome})")
        return {"version": result.version, "holdout": result.new, "seconds": result.seconds,
                "threads": torch.get_num_threads(), "blend": result.blend}

    async def _n_items(self, settings: Settings) -> int:
        redis = Redis.from_url(settings.redis.url)
        try:
            return int(await redis.llen(Keys(settings.redis.prefix).item_ids))
        finally:
            await redis.aclose()

    def _wait_applied(self, settings: Settings, n: int, worker: WorkerProcess) -> None:
        async def applied() -> int:
            redis = Redis.from_url(settings.redis.url)
            try:
                raw = await redis.hget(Keys(settings.redis.prefix).stats, "applied")
            finally:
                await redis.aclose()
            return int(raw or 0)

        deadline = time.monotonic() + 1800
        checked = time.monotonic()
        while asyncio.run(applied()) < n:
            if not worker.running:
                raise StreamrecError(f"stream worker died:\n{worker.log_tail()}")
            if time.monotonic() - checked > 10:
                checked = time.monotonic()
                if not self.stack.service("kafka").running:
                    raise StreamrecError("replay-eval: the embedded broker stopped")
            if time.monotonic() > deadline:
                raise StreamrecError("replay-eval: state not built within 30 min")
            time.sleep(0.5)

    async def _replay_and_collect(self, settings: Settings) -> dict[str, dict[str, Any]]:
        consumers = {}
        for source in self.sources:
            c = AIOKafkaConsumer(f"recommendations-{source}", **aiokafka_options(settings.kafka),
                                 group_id=None, auto_offset_reset="earliest",
                                 fetch_max_wait_ms=50)
            await c.start()
            consumers[source] = c
        lists: dict[str, dict[str, Any]] = {s: {} for s in self.sources}
        self.published: list[Published] = []

        async def collect(source: str, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
            idle_since = None
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    for msg in messages:
                        body = orjson.loads(msg.value)
                        lists[source][body["trigger"]["event_id"]] = body
                if batch:
                    idle_since = None
                elif stop.is_set():
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 10:
                        return

        stop = asyncio.Event()
        tasks = [asyncio.create_task(collect(s, c, stop)) for s, c in consumers.items()]
        start = time.perf_counter()
        chunk = max(1, int(self.rate / 100))
        delivered: list[asyncio.Future[object]] = []
        async with EventPublisher(settings) as publisher:
            for i in range(0, len(self.replayed), chunk):
                part = self.replayed[i:i + chunk]
                sent_ms = time.time() * 1000
                # handed to the producer, delivery not awaited: the pace must not depend on
                # the broker's acknowledgement latency (freshness includes it)
                delivered += [await publisher.send(e) for e in part]
                self.published += [Published(e, sent_ms) for e in part]
                ahead = (i + len(part)) / self.rate - (time.perf_counter() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            await asyncio.gather(*delivered)
        log.info("replay-eval: %d events published in %.0f s", len(self.replayed),
                 time.perf_counter() - start)
        stop.set()
        await asyncio.gather(*tasks)
        for c in consumers.values():
            await c.stop()
        return lists
