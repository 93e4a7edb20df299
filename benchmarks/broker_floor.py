"""The embedded broker's own latency floor: events offered at --rate to the three input
topics, read by a plain aiokafka consumer that does nothing else (fetching like the worker:
pausing between batches), on a fresh broker. Per 5 s window, p50 / p99 from the send to the
batch's arrival, and the broker's CPU; one line per (partitions, linger) configuration.

It shows what the broker alone adds to freshness, and how its fetch time grows during a
run: Tansu (memory storage) lists every record batch stored in a partition at each fetch,
and a producer stores a batch per partition per linger (or per event, with no linger).

    python benchmarks/broker_floor.py --rate 8000 --seconds 30 --configs 1:5 16:5 16:0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from load import cpu_seconds  # benchmarks/load.py

from infra.stack import Stack, free_port
from recmodels.datasets import synthetic_stream
from streamrec.settings import TopicSettings

WINDOW_S = 5.0


async def _offer_and_read(bootstrap: str, rate: float, seconds: float, partitions: int,
                          linger_ms: int, broker_pid: int) -> dict[str, Any]:
    t = TopicSettings()
    topics = {"view": t.view, "click": t.click, "purchase": t.purchase}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in topics.values()])
    finally:
        await admin.close()
    events = list(synthetic_stream(int(rate * seconds), n_users=20_000, n_items=5_000,
                                   seed=99))
    payload = b"x" * 150  # about the size of an event
    consumer = AIOKafkaConsumer(*topics.values(), bootstrap_servers=bootstrap, group_id="floor",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=20)
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)
    arrivals: list[tuple[float, float]] = []  # (send time, latency)
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            if consumer.paused():
                consumer.resume(*consumer.paused())
            fetched = await consumer.getmany(timeout_ms=200, max_records=2000)
            now = time.time()
            n = 0
            for records in fetched.values():
                for r in records:
                    arrivals.append((r.timestamp / 1000, now - r.timestamp / 1000))
                n += len(records)
            if 0 < n < 2000:
                consumer.pause(*consumer.assignment())

    reader = asyncio.create_task(read())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms,
                                max_batch_size=256 * 1024)
    await producer.start()
    cpu0, start, wall0 = cpu_seconds(broker_pid), time.perf_counter(), time.time()
    for i, e in enumerate(events):
        await producer.send(topics[e.type], payload, key=e.user_id.encode())
        ahead = (i + 1) / rate - (time.perf_counter() - start)
        if ahead > 0.001:
            await asyncio.sleep(ahead)
    await producer.flush()
    await asyncio.sleep(2.0)
    done.set()
    await reader
    broker_cpu = cpu_seconds(broker_pid) - cpu0
    await producer.stop()
    await consumer.stop()
    sent = np.array([a for a, _ in arrivals]) - wall0
    latency = np.array([b for _, b in arrivals])
    windows = []
    for w in np.arange(0, seconds, WINDOW_S):
        sel = latency[(sent >= w) & (sent < w + WINDOW_S)]
        if len(sel):
            windows.append({"from_s": float(w), "p50_ms": float(1000 * np.percentile(sel, 50)),
                            "p99_ms": float(1000 * np.percentile(sel, 99))})
    return {"partitions": partitions, "linger_ms": linger_ms, "received": len(arrivals),
            "offered": len(events), "broker_cpu_cores": broker_cpu / seconds,
            "p50_ms": float(1000 * np.percentile(latency, 50)),
            "p99_ms": float(1000 * np.percentile(latency, 99)), "by_5s": windows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=8000.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--configs", nargs="+", default=["1:5", "16:5", "16:0"],
                   help="partitions:linger_ms pairs, each on a fresh broker")
    p.add_argument("--out", default="out/broker_floor")
    args = p.parse_args()
    rows = []
    for config in args.configs:
        partitions, linger = (int(x) for x in config.split(":"))
        stack = Stack(Path(tempfile.mkdtemp(prefix="streamrec-floor-")))
        stack.up(kafka_port=free_port(), redis_port=free_port())
        try:
            kafka = stack.service("kafka")
            assert kafka.pid is not None
            row = asyncio.run(_offer_and_read(f"127.0.0.1:{kafka.port}", args.rate,
                                              args.seconds, partitions, linger, kafka.pid))
        finally:
            stack.down()
        rows.append(row)
        print(f"{partitions:3d} partitions, linger {linger:2d} ms: p50 {row['p50_ms']:.1f} ms, "
              f"p99 {row['p99_ms']:.1f} ms, broker {row['broker_cpu_cores']:.2f} cores; p99 "
              "by 5 s: " + " ".join(f"{w['p99_ms']:.0f}" for w in row["by_5s"]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "broker_floor.json").write_text(json.dumps(
        {"rate": args.rate, "seconds": args.seconds, "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
