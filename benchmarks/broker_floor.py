"""The embedded broker's own latency floor, and what a worker may spend per event on top
of it: events offered at --rate to the three input topics by the pipeline's load generator
(librdkafka, load.py), read by a plain aiokafka consumer in a process of its own that
fetches like the worker (pausing between batches) and, per batch, burns the CPU a worker
would: ``work_us`` per event plus --batch-work-ms (0 and 0: it does nothing else). On a
fresh broker per configuration. Per 5 s window, p50 / p99 from the send (the record's
timestamp) to the end of the batch's work, and the broker's CPU; over the run, the CPU of
the broker and of the consumer. A run of a few minutes (--seconds 150) shows where the
broker's growth alone takes freshness, whatever the worker.

It shows what the broker alone adds to freshness, how its fetch time grows during a run
(Tansu, memory storage, lists every record batch stored in a partition at each fetch, and
a producer stores a batch per partition per linger, or per event with no linger), and how
much CPU per event a worker can spend before the two together pass a freshness target: a
worker's cycle is its fetch plus its work, and the work of the events that came during the
cycle, so each microsecond per event weighs more as the rate approaches 1 / work_us.

    python benchmarks/broker_floor.py --rate 10000 --seconds 30 --configs 1:5 1:5:45 1:5:60
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from load import by_window, cpu_seconds, offer_events  # benchmarks/load.py

from infra.stack import Stack, free_port
from recmodels.datasets import synthetic_stream
from streamrec.kernel.settings import Settings
from streamrec.kernel.topics import ensure_topics, input_topics

WINDOW_S = 5.0
MAX_RECORDS = 2000  # per batch, as the worker's default state.batch_size


@dataclasses.dataclass(frozen=True)
class Config:
    partitions: int
    linger_ms: int
    work_us: float  # CPU a simulated worker spends per event

    @classmethod
    def parse(cls, text: str) -> Config:
        """``partitions:linger_ms[:work_us]``."""
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"--configs: {text!r} is not partitions:linger_ms[:work_us]")
        try:
            return cls(int(parts[0]), int(parts[1]), float(parts[2]) if len(parts) == 3 else 0.0)
        except ValueError:
            raise ValueError(f"--configs: {text!r} is not partitions:linger_ms[:work_us] "
                             "(numbers)") from None


def _burn(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time, as a worker's own work would (while
    another process has the core, the work waits: a wall-clock wait would count that as
    work done)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _read_child(bootstrap: str, topics: list[str], work_us: float, batch_ms: float,
                out: str, ready: EventType, stop: EventType) -> None:
    """The simulated worker (a process of its own): (record timestamp, latency) of every
    record to ``out`` (.npy) when ``stop`` is set."""
    arrivals: list[tuple[float, float]] = []

    async def run() -> None:
        consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id="floor",
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    fetch_max_wait_ms=20)
        await consumer.start()
        try:
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=100)
            ready.set()
            while not stop.is_set():
                if consumer.paused():
                    consumer.resume(*consumer.paused())
                fetched = await consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
                n = sum(len(records) for records in fetched.values())
                if not n:
                    continue
                if n < MAX_RECORDS:
                    consumer.pause(*consumer.assignment())
                _burn(batch_ms / 1000 + work_us * n / 1e6)
                now = time.time()
                for records in fetched.values():
                    arrivals.extend((r.timestamp / 1000, now - r.timestamp / 1000)
                                    for r in records)
        finally:
            await consumer.stop()

    asyncio.run(run())
    np.save(out, np.array(arrivals, dtype=np.float64).reshape(-1, 2))


def _cores_by_window(pid: int, done: threading.Event, rows: list[dict[str, float]]) -> None:
    """The CPU cores ``pid`` used in each WINDOW_S window from now until ``done`` (the last,
    partial window is left out)."""
    first = start = time.monotonic()
    used = cpu_seconds(pid)
    while not done.wait(max(0.0, start + WINDOW_S - time.monotonic())):
        now, cpu = time.monotonic(), cpu_seconds(pid)
        rows.append({"from_s": start - first, "cores": (cpu - used) / (now - start)})
        start, used = now, cpu


def offer_and_read(bootstrap: str, rate: float, seconds: float, config: Config,
                   batch_ms: float, broker_pid: int, run_dir: Path) -> dict[str, Any]:
    settings = Settings.model_validate({"kafka": {"bootstrap": bootstrap,
                                                  "partitions": config.partitions}})
    topics = list(input_topics(settings).values())
    asyncio.run(ensure_topics(settings))  # a fresh broker: all of them, config.partitions each
    events = list(synthetic_stream(int(rate * seconds), n_users=20_000, n_items=5_000,
                                   seed=99))  # sent with ts = the send time
    spawn = multiprocessing.get_context("spawn")
    ready, stop = spawn.Event(), spawn.Event()
    out = run_dir / "arrivals.npy"
    child = spawn.Process(target=_read_child, args=(bootstrap, topics, config.work_us,
                                                    batch_ms, str(out), ready, stop))
    child.start()
    try:
        deadline = time.monotonic() + 120
        while not ready.wait(0.2):
            if not child.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("broker_floor: the consumer did not join its group "
                                   f"(exit code {child.exitcode})")
        assert child.pid is not None
        broker0, reader0 = cpu_seconds(broker_pid), cpu_seconds(child.pid)
        wall0 = time.time()
        broker_by_5s: list[dict[str, float]] = []
        offering = threading.Event()
        sampler = threading.Thread(target=_cores_by_window,
                                   args=(broker_pid, offering, broker_by_5s))
        sampler.start()
        try:
            asyncio.run(offer_events(settings, events, rate, config.linger_ms))
        finally:
            offering.set()
            sampler.join()
        offered_s = time.time() - wall0
        broker_cpu = cpu_seconds(broker_pid) - broker0
        if not child.is_alive():
            raise RuntimeError("broker_floor: the consumer died while the events were "
                               f"offered (exit code {child.exitcode})")
        reader_cpu = cpu_seconds(child.pid) - reader0
        time.sleep(3.0)  # the last batches (a consumer behind is still reading)
    finally:
        stop.set()
        child.join(60)
        if child.is_alive():
            child.kill()
    if child.exitcode != 0 or not out.exists():
        raise RuntimeError(f"broker_floor: the consumer failed (exit code {child.exitcode})")
    arrivals = np.load(out)
    if not len(arrivals):
        raise RuntimeError("broker_floor: the consumer read no record")
    sent, latency = arrivals[:, 0] - wall0, arrivals[:, 1]
    windows = [{"from_s": w["from_s"], "p50_ms": 1000 * w["p50"], "p99_ms": 1000 * w["p99"]}
               for w in by_window(list(zip(sent.tolist(), latency.tolist(), strict=True)),
                                  WINDOW_S)]
    return {"partitions": config.partitions, "linger_ms": config.linger_ms,
            "work_us_per_event": config.work_us, "work_ms_per_batch": batch_ms,
            # all_read false: the consumer was still more than 3 s behind at the end, and
            # the latencies of the records it had not read are missing from the quantiles
            "received": len(arrivals), "offered": len(events),
            "all_read": len(arrivals) >= len(events),
            "broker_cpu_cores": broker_cpu / offered_s,
            "consumer_cpu_cores": reader_cpu / offered_s,
            "broker_cores_by_5s": broker_by_5s,
            "p50_ms": float(1000 * np.percentile(latency, 50)),
            "p99_ms": float(1000 * np.percentile(latency, 99)), "by_5s": windows}


async def _fetch_ms(bootstrap: str, tp: TopicPartition, tries: int = 20) -> float:
    """Median time of a fetch of the partition's last 50 records."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        times = []
        for _ in range(tries):
            consumer.seek(tp, max(0, end - 50))
            started = time.perf_counter()
            await consumer.getmany(tp, timeout_ms=1000)
            times.append(time.perf_counter() - started)
        return float(np.median(times) * 1000)
    finally:
        await consumer.stop()


async def retention_probe(bootstrap: str, stops: list[int]) -> dict[str, Any]:
    """Fetch time against stored batches (one record each, on one partition), then whether
    the broker trims a log on DeleteRecords as Kafka's retention would."""
    topic = "floor-retention"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    tp = TopicPartition(topic, 0)
    fetch: dict[str, float] = {}
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
        stored = 0
        for stop in stops:
            while stored < stop:  # waiting for each send: one batch per record
                await (await producer.send(topic, b"x" * 200))
                stored += 1
            fetch[str(stop)] = round(await _fetch_ms(bootstrap, tp), 2)
            print(f"{stop:6d} stored batches: fetch {fetch[str(stop)]:.2f} ms", flush=True)
        try:
            await admin.delete_records({tp: RecordsToDelete(stored - 100)}, timeout_ms=5000)
            deleted = "accepted"
        except Exception as exc:  # what the broker does with it is the finding
            deleted = f"refused: {type(exc).__name__}: {exc}"
        reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await reader.start()
        try:
            start = (await reader.beginning_offsets([tp]))[tp]
        finally:
            await reader.stop()
        return {"fetch_ms_by_stored_batches": fetch, "delete_records": deleted,
                "log_start_after": start,
                "fetch_ms_after": round(await _fetch_ms(bootstrap, tp), 2)}
    finally:
        await producer.stop()
        await admin.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=8000.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--configs", nargs="+", default=["1:5", "16:5", "16:0"],
                   help="partitions:linger_ms[:work_us] (the simulated worker's CPU per "
                        "event, default 0), each on a fresh broker")
    p.add_argument("--batch-work-ms", type=float, default=0.0,
                   help="the simulated worker's CPU per batch besides its work per event")
    p.add_argument("--out", default="out/broker_floor")
    p.add_argument("--retention-probe", type=int, nargs="+", metavar="BATCHES",
                   help="instead: fetch time after this many stored batches, then whether "
                        "DeleteRecords trims the log (e.g. 1000 10000 30000)")
    args = p.parse_args()
    if args.retention_probe:
        run_dir = Path(tempfile.mkdtemp(prefix="streamrec-floor-"))
        stack = Stack(run_dir)
        stack.up(kafka_port=free_port(), redis_port=free_port())
        try:
            probe = asyncio.run(retention_probe(
                f"127.0.0.1:{stack.service('kafka').port}", sorted(args.retention_probe)))
        finally:
            stack.down()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "retention_probe.json").write_text(json.dumps(probe, indent=2))
        print(json.dumps(probe, indent=2))
        return 0
    try:
        configs = [Config.parse(text) for text in args.configs]
    except ValueError as exc:
        p.error(str(exc))
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    for config in configs:
        run_dir = Path(tempfile.mkdtemp(prefix="streamrec-floor-"))
        stack = Stack(run_dir)
        stack.up(kafka_port=free_port(), redis_port=free_port())
        try:
            kafka = stack.service("kafka")
            assert kafka.pid is not None
            row = offer_and_read(f"127.0.0.1:{kafka.port}", args.rate, args.seconds, config,
                                 args.batch_work_ms, kafka.pid, run_dir)
        finally:
            stack.down()
        rows.append(row)
        out.mkdir(parents=True, exist_ok=True)  # after each one: a later one may fail
        (out / "broker_floor.json").write_text(json.dumps(
            {"rate": args.rate, "seconds": args.seconds, "batch_work_ms": args.batch_work_ms,
             "runs": rows}, indent=2))
        print(f"{config.partitions:3d} partitions, linger {config.linger_ms:2d} ms, work "
              f"{config.work_us:4.0f} us/event + {args.batch_work_ms:.1f} ms/batch: "
              f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, broker "
              f"{row['broker_cpu_cores']:.2f} cores, consumer {row['consumer_cpu_cores']:.2f}; "
              "p99 by 5 s: " + " ".join(f"{w['p99_ms']:.0f}" for w in row["by_5s"])
              + "; broker cores by 5 s: "
              + " ".join(f"{w['cores']:.2f}" for w in row["broker_cores_by_5s"])
              + ("" if row["all_read"] else
                 f" (NOT ALL READ: {row['received']} of {row['offered']}, still behind)"),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
