"""Freshness and pull latency on the embedded stack, one worker.

(0) Warm-up: --warmup events are applied, and with --train-budget a SASRec version is
    trained on them and loaded, so the worker serves with user embeddings throughout.
(1) Freshness: events offered at --rate events/s for --seconds; event-to-recommendation
    latency from the worker's histogram (input event's Kafka timestamp to list published),
    and from the event's send to the list's record timestamp (set when the worker hands
    the list to its producer), p50 / p99, also per 10 s and per 1 s window.
(2) Pull: --requests sequential GET /recommendations/{user} for known users, p50 / p99.

Stalls: every second of (1), a sampler records the worker's mean time per batch in each
stage (from /metrics), the CPU seconds of the worker, the broker, Redis and this process,
Redis' latency monitor (events over 10 ms: fork, AOF write and fsync, slow commands) and
GC passes over 10 ms in this process. ``stalls`` lists the seconds whose client p99 is
over twice the run's median one, each with what that second looked like.

    python benchmarks/serving_latency.py --rate 1000 --seconds 60 --requests 1000 --out out/serving
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
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
from streamrec.kernel.settings import Settings
from streams.producer import publish

FRESHNESS = "streamrec_event_to_recommendation_seconds"


class StallSampler:
    """Once a second: the worker's stage means, CPU per process, Redis latency events, and
    this process' slow GC passes (see the module docstring)."""

    def __init__(self, http: int, redis: Redis, pids: dict[str, int | None]) -> None:
        self._http, self._redis, self._pids = http, redis, pids
        self.rows: list[dict[str, Any]] = []
        self._gc: list[tuple[float, float]] = []
        self._gc_start = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif (took := time.perf_counter() - self._gc_start) > 0.01:
            self._gc.append((time.monotonic(), took * 1000))

    def __enter__(self) -> StallSampler:
        self._redis.config_set("latency-monitor-threshold", 10)
        self._redis.execute_command("LATENCY", "RESET")  # type: ignore[no-untyped-call]
        gc.callbacks.append(self._on_gc)
        self.t0 = time.monotonic()  # the clock of the rows' to_s
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        gc.callbacks.remove(self._on_gc)

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name, pid in self._pids.items():
            try:
                out[name] = cpu_seconds(pid) if pid else 0.0
            except OSError:
                out[name] = 0.0
        return out

    def _run(self) -> None:
        page = urllib.request.urlopen(f"http://127.0.0.1:{self._http}/metrics").read()
        before, cpu = page.decode(), self._cpu()
        while not self._stop.wait(1.0):
            text = urllib.request.urlopen(f"http://127.0.0.1:{self._http}/metrics"
                                          ).read().decode()
            now_cpu = self._cpu()
            events = self._redis.execute_command(  # type: ignore[no-untyped-call]
                "LATENCY", "LATEST") or []
            self._redis.execute_command("LATENCY", "RESET")  # type: ignore[no-untyped-call]
            at = time.monotonic() - self.t0
            self.rows.append({
                "to_s": round(at, 2),
                "worker_ms_per_batch": stage_means_ms(text, before),
                "cpu_s": {k: round(now_cpu[k] - cpu[k], 3) for k in now_cpu},
                "redis_latency_events": {
                    (e[0].decode() if isinstance(e[0], bytes) else str(e[0])): int(e[2])
                    for e in events},
                "client_gc_ms": [round(ms, 1) for t, ms in self._gc
                                 if at - 1.0 <= t - self.t0 < at]})
            before, cpu = text, now_cpu


def stalls(windows: list[dict[str, float]], rows: list[dict[str, Any]],
           offset_s: float) -> list[dict[str, Any]]:
    """The seconds whose p99 is over twice the median p99, with the sampler's row of that
    second (``offset_s``: the sampler's clock at the load's start)."""
    if not windows:
        return []
    typical = float(np.median([w["p99"] for w in windows]))
    out = []
    for w in windows:
        if w["p99"] > 2 * typical:
            start = w["from_s"] + offset_s
            row = next((r for r in rows if start < r["to_s"] <= start + 1.5), {})
            out.append({**w, "median_p99": typical, **row})
    return out


def _settled_metrics(http: int) -> str:
    """/metrics once the warm-up's lists are all published (the freshness count stops
    moving), so that none of them counts in the run."""
    last: list[str] = []
    for _ in range(120):
        page: bytes = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics").read()
        text = page.decode()
        count = [line for line in text.splitlines() if line.startswith(FRESHNESS + "_count")]
        if count and count == last:
            return text
        last = count
        time.sleep(1.0)
    raise RuntimeError("the warm-up's lists are still being published after 120 s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=20_000,
                   help="events applied before the run (the model is trained on them)")
    p.add_argument("--train-budget", type=float, default=30.0,
                   help="train a SASRec version this long before the run (0: Markov only)")
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
        if args.warmup:
            asyncio.run(publish(settings, synthetic_stream(args.warmup, n_users=5000,
                                                           n_items=2000, seed=11),
                                args.warmup))
            wait_applied(Redis(port=redis), args.warmup, worker)
        model = train_and_load(env, http, args.train_budget) if args.train_budget > 0 else "markov"
        before = _settled_metrics(http)
        timeline: list[tuple[float, float]] = []
        pids = {"worker": worker.pid, "broker": stack.service("kafka").pid,
                "redis": stack.service("redis").pid, "load_generator": os.getpid()}
        started: list[float] = []
        with StallSampler(http, Redis(port=redis), pids) as sampler:
            client = asyncio.run(offer_load(
                settings, args.rate, args.seconds, timeline=timeline,
                on_start=lambda: started.append(time.monotonic() - sampler.t0)))
        metrics_text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics").read().decode()
        fresh = quantiles(bucket_delta(histogram_buckets(metrics_text, FRESHNESS),
                                       histogram_buckets(before, FRESHNESS)), (0.5, 0.99))
        stages = stage_means_ms(metrics_text, before)
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
        "offered_rate": args.rate, "seconds": args.seconds, "warmup_events": args.warmup,
        "model_during_run": model,
        "freshness_histogram_s": fresh,
        "mean_ms_per_batch": stages,
        "freshness_client_s": {"p50": float(np.percentile(client, 50)),
                               "p99": float(np.percentile(client, 99)), "count": len(client)},
        "freshness_client_by_10s": by_window(timeline, 10.0),
        # stalls show as single seconds whose p99 is far above the others'
        "freshness_client_by_1s": by_window(timeline, 1.0),
        "stalls": stalls(by_window(timeline, 1.0), sampler.rows, started[0] if started else 0),
        "per_second": sampler.rows,
        "pull_s": {"p50": float(np.percentile(pulls, 50)), "p99": float(np.percentile(pulls, 99)),
                   "requests": len(pulls)},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving_latency.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
