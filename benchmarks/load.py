"""Shared by the latency benchmarks: offered load at a fixed rate, and quantiles from a
Prometheus histogram. Imported as a sibling module by the scripts in this folder."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import orjson
from aiokafka import AIOKafkaConsumer

from recmodels.datasets import synthetic_stream
from streamrec.replay import EventPublisher
from streamrec.settings import Settings

Buckets = list[tuple[float, float]]  # (upper bound, cumulative count), ascending


def histogram_buckets(text: str, name: str) -> Buckets:
    """A Prometheus histogram's cumulative buckets from a /metrics page."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    return sorted(buckets)


def bucket_delta(after: Buckets, before: Buckets) -> Buckets:
    """What was observed between two scrapes."""
    earlier = dict(before)
    return [(le, n - earlier.get(le, 0.0)) for le, n in after]


def quantiles(buckets: Buckets, qs: tuple[float, ...]) -> dict[str, float]:
    """Quantiles from cumulative buckets (linear within a bucket)."""
    total = buckets[-1][1] if buckets else 0.0
    out = {}
    for q in qs:
        target, prev_le, prev_n = q * total, 0.0, 0.0
        for le, n in buckets:
            if n >= target:
                frac = (target - prev_n) / (n - prev_n) if n > prev_n else 1.0
                out[f"p{int(q * 100)}"] = prev_le + frac * ((le if le != float("inf")
                                                             else prev_le) - prev_le)
                break
            prev_le, prev_n = le, n
    out["count"] = total
    return out


def histogram_quantiles(text: str, name: str, qs: tuple[float, ...]) -> dict[str, float]:
    return quantiles(histogram_buckets(text, name), qs)


def stage_means_ms(text: str) -> dict[str, float]:
    """Mean milliseconds per batch of each stage and Redis operation (histogram sum/count)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        for metric in ("streamrec_stage_seconds", "streamrec_redis_seconds",
                       "streamrec_recommend_seconds", "streamrec_state_batch_events"):
            for part, into in (("_sum", sums), ("_count", counts)):
                if name.startswith(metric + part):
                    into[name.replace(part, "", 1).removeprefix("streamrec_")] = float(value)
    return {k: round(1000 * v / counts[k], 3) if "events" not in k else round(v / counts[k], 1)
            for k, v in sums.items() if counts.get(k)}


async def offer_load(settings: Settings, rate: float, seconds: float, seed: int = 7,
                     n_users: int = 5000, n_items: int = 2000) -> list[float]:
    """Offer ``rate`` events/s for ``seconds`` (ts = now); the client-side latency of each
    list triggered by an offered event (sent -> received)."""
    events = [dataclasses.replace(e, ts=0) for e in synthetic_stream(
        int(rate * seconds), n_users=n_users, n_items=n_items, seed=seed)]
    sent: dict[str, float] = {}
    latencies: list[float] = []
    consumer = AIOKafkaConsumer(settings.topics.recommendations,
                                bootstrap_servers=settings.kafka.bootstrap, group_id=None,
                                auto_offset_reset="latest", fetch_max_wait_ms=10)
    await consumer.start()
    await asyncio.sleep(1)

    async def collect(stop: asyncio.Event) -> None:
        while not (stop.is_set() and len(latencies) >= len(sent) * 0.5):
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for msgs in batch.values():
                for m in msgs:
                    trigger = orjson.loads(m.value)["trigger"]["event_id"]
                    if trigger in sent:
                        latencies.append(now - sent.pop(trigger))
            if stop.is_set() and not batch:
                break

    stop = asyncio.Event()
    task = asyncio.create_task(collect(stop))
    start = time.perf_counter()
    async with EventPublisher(settings, linger_ms=0) as publisher:  # latency, not batching
        for i, planned in enumerate(events):
            event = dataclasses.replace(planned, ts=int(time.time() * 1000))
            sent[event.event_id] = time.time()
            await publisher.send(event)
            ahead = (i + 1) / rate - (time.perf_counter() - start)
            if ahead > 0.001:
                await asyncio.sleep(ahead)
    await asyncio.sleep(3)
    stop.set()
    await task
    await consumer.stop()
    return latencies


