"""Throughput against the ceiling, in one run on the embedded stack:

(a) raw aiokafka passthrough: consume, decode, produce the same events (the ceiling);
(b) a Faust agent that only consumes them with take_events (Faust's own overhead floor);
(c) one streamrec worker's full path: validation, effectively-once state, user vectors,
    scoring, publication (until every event is applied and every update served).

Reports events/s of each, the ratios (c)/(a) and (c)/(b), CPU seconds per 1,000 events
and Redis commands per event of (c); writes JSON and a PNG.

    python benchmarks/pipeline.py --events 100000 --out out/pipeline
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
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis import Redis

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from recmodels.datasets import synthetic_stream
from streamrec.keys import Keys
from streamrec.replay import event_payload

CHILD_FAUST = "faust-consume"


def _events(n: int) -> list[bytes]:
    """Views only: all of them go to events.view (a click on that topic would be rejected)."""
    return [event_payload(dataclasses.replace(e, type="view"))
            for e in synthetic_stream(n, n_users=20_000, n_items=5_000)]


async def _fill(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=512 * 1024)
    await producer.start()
    try:
        pending = []
        for raw in payloads:
            key = orjson.loads(raw)["user_id"].encode()
            pending.append(await producer.send(topic, raw, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def raw_passthrough(bootstrap: str, topic: str, n: int) -> float:
    """Seconds for a plain aiokafka loop to consume, decode and produce n events."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="bench-raw",
                                auto_offset_reset="earliest", max_poll_records=5000,
                                fetch_max_wait_ms=20)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=512 * 1024)
    await consumer.start()
    await producer.start()
    seen = 0
    start = None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            for messages in batch.values():
                if start is None:
                    start = time.perf_counter()
                for msg in messages:
                    body = orjson.loads(msg.value)
                    # enqueue only; delivery is awaited once, by flush
                    await producer.send(f"{topic}.out", orjson.dumps(body), key=msg.key)
                    seen += 1
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()
    return time.perf_counter() - (start or time.perf_counter())


def faust_consume_child(bootstrap: str, topic: str, n: int, out: str) -> None:
    """Runs in a child process: a Faust agent that only counts events (take_events)."""
    import faust  # noqa: PLC0415

    app = faust.App("bench-faust", broker=f"kafka://{bootstrap}", value_serializer="raw",
                    broker_rebalance_timeout=5, broker_session_timeout=10, web_enabled=False,
                    consumer_auto_offset_reset="earliest", topic_partitions=4,
                    datadir=tempfile.mkdtemp())
    source = app.topic(topic)
    state = {"seen": 0, "start": 0.0}

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for batch in stream.take_events(2000, within=0.005):
            if not state["seen"]:
                state["start"] = time.perf_counter()
            state["seen"] += len(batch)
            if state["seen"] >= n:
                elapsed = time.perf_counter() - state["start"]
                Path(out).write_text(json.dumps({"seconds": elapsed}))  # noqa: ASYNC240
                os._exit(0)

    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.execute_from_commandline()


def faust_consume(bootstrap: str, topic: str, n: int, run: Path) -> float:
    out = run / "faust.json"
    proc = subprocess.Popen([sys.executable, __file__, CHILD_FAUST, bootstrap, topic, str(n),
                             str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(600)
    finally:
        proc.kill()
    return float(json.loads(out.read_text())["seconds"])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_calls(redis: Redis) -> int:
    stats: dict[str, Any] = redis.info("commandstats")  # type: ignore[assignment]
    return sum(int(v["calls"]) for v in stats.values())


def _lag(http: int, topic: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("streamrec_consumer_lag_messages{")
               and f'topic="{topic}"' in line)


def full_path(kafka: int, redis_port: int, payloads: list[bytes], run: Path) -> dict[str, float]:
    """One worker (role all) over n events already on events.view; the clock starts when
    the worker has joined its group (it starts consuming then)."""
    n = len(payloads)
    bootstrap = f"127.0.0.1:{kafka}"
    http = free_port()
    env = dict(os.environ, STREAMREC_KAFKA__BOOTSTRAP=bootstrap,
               STREAMREC_REDIS__URL=f"redis://127.0.0.1:{redis_port}/0",
               STREAMREC_METRICS__PORT=str(http), STREAMREC_WORKER__DATA_DIR=str(run / "faust"),
               STREAMREC_WORKER__LAG_INTERVAL_S="0.5", STREAMREC_LOG_LEVEL="WARNING")
    redis = Redis(port=redis_port)
    worker = WorkerProcess(env, run, role="all")
    try:
        asyncio.run(_fill(bootstrap, "events.view", payloads))  # all waiting before the start
        worker.start().wait_ready()
        assert worker.proc is not None
        cpu0, calls0 = _cpu_seconds(worker.proc.pid), _redis_calls(redis)
        start = time.perf_counter()
        applied_at = None
        while True:
            applied = int(redis.hget(Keys().stats, "applied") or 0)
            if applied >= n and applied_at is None:
                applied_at = time.perf_counter()
            if applied_at is not None and _lag(http, "streamrec.user-updates") == 0 \
                    and time.perf_counter() - applied_at > 0.6:
                break
            if time.perf_counter() - start > 900:
                raise RuntimeError(f"full path: {applied} of {n} applied in 900 s")
            time.sleep(0.05)
        seconds = time.perf_counter() - start - 0.6  # the lag gauge's settle time
        cpu = _cpu_seconds(worker.proc.pid) - cpu0
        calls = _redis_calls(redis) - calls0
    finally:
        worker.stop()
    return {"seconds": seconds, "applied_seconds": (applied_at or 0) - start,
            "cpu_s_per_1000": 1000 * cpu / n, "redis_commands_per_event": calls / n}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FAUST:
        faust_consume_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return 0
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--out", default="out/pipeline")
    args = p.parse_args()
    run = Path(tempfile.mkdtemp(prefix="streamrec-pipeline-"))
    kafka, redis_port = free_port(), free_port()
    stack = Stack(run / "stack")
    stack.up(kafka_port=kafka, redis_port=redis_port)
    bootstrap = f"127.0.0.1:{kafka}"
    payloads = _events(args.events)
    try:
        asyncio.run(_fill(bootstrap, "bench.in", payloads))
        raw = asyncio.run(raw_passthrough(bootstrap, "bench.in", args.events))
        faust_s = faust_consume(bootstrap, "bench.in", args.events, run)
        full = full_path(kafka, redis_port, payloads, run)
    finally:
        stack.down()
    rates = {"raw_aiokafka": args.events / raw, "faust_consume_only": args.events / faust_s,
             "streamrec_full_path": args.events / full["seconds"]}
    result = {
        "events": args.events, "machine": f"{os.cpu_count()} cores, embedded Tansu + Redis",
        "events_per_s": rates,
        "ratio_full_to_raw": rates["streamrec_full_path"] / rates["raw_aiokafka"],
        "ratio_full_to_faust": rates["streamrec_full_path"] / rates["faust_consume_only"],
        "full_path": full,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(result, indent=2))
    try:
        import matplotlib as mpl  # noqa: PLC0415

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415

        fig, ax = plt.subplots(figsize=(6, 3))
        ax.barh(list(rates), list(rates.values()))
        ax.set_xlabel("events/s")
        ax.set_title(f"{args.events} events, one process each")
        fig.tight_layout()
        fig.savefig(out / "pipeline.png", dpi=120)
    except ImportError:
        pass
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
