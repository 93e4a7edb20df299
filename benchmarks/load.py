"""Shared by the benchmarks: offered load at a fixed rate, quantiles from a Prometheus
histogram, waiting on the worker. Imported as a sibling module by the scripts here."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import KafkaError, Producer
from redis import Redis

from infra.processes import WorkerProcess
from recmodels.datasets import Interaction, synthetic_stream
from streamrec.kernel.settings import Settings
from streamrec.kernel.topics import input_topics
from streamrec.state.keys import Keys
from streams.producer import event_payload

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_applied(redis: Redis, n: int, worker: WorkerProcess, timeout_s: float = 900) -> None:
    """Until the worker has applied ``n`` events in all (raises if it died or timed out)."""
    deadline = time.monotonic() + timeout_s
    while int(redis.hget(Keys().stats, "applied") or 0) < n:
        if time.monotonic() > deadline or not worker.running:
            raise RuntimeError(f"not all {n} events applied\n{worker.log_tail()}")
        time.sleep(0.05)


def train_and_load(env: dict[str, str], http: int, budget_s: float) -> str:
    """One trainer round on the state so far; waits until the worker serves with it."""
    subprocess.run([sys.executable, "-m", "streamrec.app.cli", "trainer", "--once",
                    "--time-budget", str(budget_s)], env=env, check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz",
                                                   timeout=5).read())
        if health["model_version"] != "markov":
            return str(health["model_version"])
        time.sleep(0.2)
    raise RuntimeError("the worker did not load the trained model within 60 s")


def by_window(timeline: list[tuple[float, float]], window_s: float) -> list[dict[str, float]]:
    """p50 / p99 of the latencies of the events sent in each window of the run."""
    windows: dict[int, list[float]] = {}
    for at, latency in timeline:
        windows.setdefault(int(at // window_s), []).append(latency)
    return [{"from_s": k * window_s, "p50": float(np.percentile(v, 50)),
             "p99": float(np.percentile(v, 99)), "count": len(v)}
            for k, v in sorted(windows.items())]


def stage_means_ms(text: str, before: str = "") -> dict[str, float]:
    """Mean milliseconds per batch of each stage and Redis operation (histogram sum/count),
    over what happened since the scrape ``before`` (if given)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for sign, scrape in ((1.0, text), (-1.0, before)):
        for line in scrape.splitlines():
            name, _, value = line.rpartition(" ")
            for metric in ("streamrec_stage_seconds", "streamrec_redis_seconds",
                           "streamrec_recommend_seconds", "streamrec_state_batch_events"):
                for part, into in (("_sum", sums), ("_count", counts)):
                    if name.startswith(metric + part):
                        key = name.replace(part, "", 1).removeprefix("streamrec_")
                        into[key] = into.get(key, 0.0) + sign * float(value)
    return {k: round(1000 * v / counts[k], 3) if "events" not in k else round(v / counts[k], 1)
            for k, v in sums.items() if counts.get(k)}


async def offer_load(settings: Settings, rate: float, seconds: float, seed: int = 7,
                     n_users: int = 5000, n_items: int = 2000,
                     timeline: list[tuple[float, float]] | None = None,
                     linger_ms: int = 0,
                     on_start: Callable[[], None] | None = None) -> list[float]:
    """Offer ``rate`` events/s for ``seconds`` (ts = now); the latency of each list
    triggered by an offered event: from the event's send to the list's record timestamp,
    which the worker's producer sets when the list is handed to it (so the producer's
    linger and the broker's acknowledgement, which the worker's histogram includes, are
    not in it). ``timeline`` gets (seconds into the run when sent, latency) of each.

    The lists are read after the run: a reader fetching during the run would load the
    embedded broker, whose fetch cost grows with the batches stored per partition (on the
    same two cores as the worker), and its polling would add to what it measures."""
    events = [dataclasses.replace(e, ts=0) for e in synthetic_stream(
        int(rate * seconds), n_users=n_users, n_items=n_items, seed=seed)]
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=None,
                              enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(settings.topics.recommendations, p)
               for p in sorted(await _partitions(reader, settings.topics.recommendations))]
        reader.assign(tps)
        starts = await reader.end_offsets(tps)
        sent = await offer_events(settings, events, rate, linger_ms, on_start)
        ends = await _settled_ends(reader, tps)
        for tp in tps:
            reader.seek(tp, starts[tp])
        latencies: list[float] = []
        wall_start = min(sent.values(), default=0.0)
        while any([await reader.position(tp) < ends[tp] for tp in tps]):
            batch = await reader.getmany(timeout_ms=500, max_records=5000)
            for msgs in batch.values():
                for m in msgs:
                    at = sent.pop(orjson.loads(m.value)["trigger"]["event_id"], None)
                    if at is not None:
                        latencies.append(m.timestamp / 1000 - at)
                        if timeline is not None:
                            timeline.append((at - wall_start, latencies[-1]))
    finally:
        await reader.stop()
    return latencies


async def _settled_ends(reader: AIOKafkaConsumer, tps: list[TopicPartition],
                        quiet_s: float = 3.0, limit_s: float = 300.0) -> dict[TopicPartition, int]:
    """End offsets once no list has been added for ``quiet_s`` (a worker behind is still
    publishing: its late lists count too), or after ``limit_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    ends: dict[TopicPartition, int] = await reader.end_offsets(tps)
    quiet_since = loop.time()
    while loop.time() - quiet_since < quiet_s and loop.time() < deadline:
        await asyncio.sleep(0.5)
        now = await reader.end_offsets(tps)
        if now != ends:
            ends, quiet_since = now, loop.time()
    return ends


async def _partitions(reader: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        partitions = reader.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        await reader._client.force_metadata_update()  # topic metadata
    raise RuntimeError(f"topic {topic} has no partitions")


async def offer_events(settings: Settings, events: list[Interaction], rate: float,
                 linger_ms: int, on_start: Callable[[], None] | None = None
                 ) -> dict[str, float]:
    """Publish at ``rate`` with the producer's ``linger_ms`` (it counts in the latency: the
    record timestamp is taken at the send); when each event was sent (by event id).

    The producer is librdkafka's (confluent-kafka), run in a thread: the generator spends
    11.8 µs of CPU per event at 10,000 events/s, against 26.9 µs with aiokafka's producer
    (measured side by side against the embedded broker). It shares the two cores with the
    worker, the broker and Redis, and what it takes from them is not a cost that a
    deployment's worker pays."""
    if settings.kafka.security_protocol != "PLAINTEXT":
        raise ValueError("kafka.security_protocol: the load generator speaks PLAINTEXT only "
                         f"(got {settings.kafka.security_protocol})")
    return await asyncio.to_thread(_offer_blocking, settings, events, rate, linger_ms,
                                   on_start)


def _offer_blocking(settings: Settings, events: list[Interaction], rate: float,
                    linger_ms: int, on_start: Callable[[], None] | None) -> dict[str, float]:
    topics = input_topics(settings)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap,
                         "linger.ms": linger_ms, "acks": "all", "enable.idempotence": False})
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    sent: dict[str, float] = {}
    start = time.perf_counter()
    if on_start is not None:
        on_start()
    for i, planned in enumerate(events):
        now = time.time()
        event = dataclasses.replace(planned, ts=int(now * 1000))
        sent[event.event_id] = now
        _produce(producer, topics[event.type], event_payload(event), event.user_id.encode(),
                 delivered)
        ahead = (i + 1) / rate - (time.perf_counter() - start)
        if ahead > 0.001:
            producer.poll(0)  # delivery reports
            time.sleep(ahead)
    left = producer.flush(30)
    if left or errors:
        raise RuntimeError(f"load generator: {left} events not delivered, "
                           f"{len(errors)} failed (first: {errors[:1]})")
    return sent


def _produce(producer: Producer, topic: str, value: bytes, key: bytes,
             on_delivery: Callable[[KafkaError | None, object], None]) -> None:
    """Hand one record to librdkafka; while its local queue is full (the broker behind),
    wait for deliveries and try again."""
    while True:
        try:
            producer.produce(topic, value, key=key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)
