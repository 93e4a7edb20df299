"""Freshness and pull latency on the embedded stack, one worker.

(1) Freshness: events offered at --rate events/s for --seconds; event-to-recommendation
    latency from the worker's histogram (input event's Kafka timestamp to list published),
    and end to end as a client sees it (send -> list received), p50 / p99.
(2) Pull: --requests sequential GET /recommendations/{user} for known users, p50 / p99.

    python benchmarks/serving_latency.py --rate 1000 --seconds 60 --requests 1000 --out out/serving
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from recmodels.datasets import synthetic_stream
from streamrec.replay import EventPublisher
from streamrec.settings import Settings


def histogram_quantiles(text: str, name: str, qs: tuple[float, ...]) -> dict[str, float]:
    """Quantiles from a Prometheus histogram's cumulative buckets (linear in a bucket)."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    buckets.sort()
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


async def offer_load(settings: Settings, rate: float, seconds: float) -> list[float]:
    events = [dataclasses.replace(e, ts=0) for e in synthetic_stream(int(rate * seconds),
                                                                     n_users=5000,
                                                                     n_items=2000)]
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
    async with EventPublisher(settings) as publisher:
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--train-budget", type=float, default=30.0,
                   help="train a SASRec version this long before the pull test (0: Markov)")
    p.add_argument("--out", default="out/serving")
    args = p.parse_args()
    run = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    kafka, redis, http = free_port(), free_port(), free_port()
    stack = Stack(run / "stack")
    stack.up(kafka_port=kafka, redis_port=redis)
    env = dict(os.environ, STREAMREC_KAFKA__BOOTSTRAP=f"127.0.0.1:{kafka}",
               STREAMREC_REDIS__URL=f"redis://127.0.0.1:{redis}/0",
               STREAMREC_METRICS__PORT=str(http), STREAMREC_WORKER__DATA_DIR=str(run / "faust"),
               STREAMREC_LOG_LEVEL="WARNING")
    worker = WorkerProcess(env, run)
    try:
        worker.start().wait_ready()
        settings = Settings.model_validate({"kafka": {"bootstrap": f"127.0.0.1:{kafka}"}})
        client = asyncio.run(offer_load(settings, args.rate, args.seconds))
        metrics_text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics").read().decode()
        fresh = histogram_quantiles(metrics_text, "streamrec_event_to_recommendation_seconds",
                                    (0.5, 0.99))
        model = "markov"
        if args.train_budget > 0:  # pull with a SASRec version loaded, as in production
            subprocess.run([sys.executable, "-m", "streamrec.cli", "trainer", "--once",
                            "--time-budget", str(args.train_budget)], env=env, check=True,
                           capture_output=True)
            deadline = time.monotonic() + 30
            while model == "markov" and time.monotonic() < deadline:
                health = json.loads(urllib.request.urlopen(
                    f"http://127.0.0.1:{http}/healthz").read())
                model = health["model_version"]
                time.sleep(0.2)
        pulls = []
        for i in range(args.requests):
            t = time.perf_counter()
            urllib.request.urlopen(f"http://127.0.0.1:{http}/recommendations/user-{i % 5000}"
                                   "?n=10").read()
            pulls.append(time.perf_counter() - t)
    finally:
        worker.stop()
        stack.down()
    result = {
        "machine": f"{os.cpu_count()} cores",
        "offered_rate": args.rate, "seconds": args.seconds,
        "freshness_histogram_s": fresh,
        "freshness_client_s": {"p50": float(np.percentile(client, 50)),
                               "p99": float(np.percentile(client, 99)), "count": len(client)},
        "pull_s": {"p50": float(np.percentile(pulls, 50)), "p99": float(np.percentile(pulls, 99)),
                   "requests": len(pulls), "model_version": model},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving_latency.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
