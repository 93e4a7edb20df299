"""Freshness and pull latency on the embedded stack, one worker.

(0) Warm-up: --warmup events are applied, and with --train-budget a SASRec version is
    trained on them and loaded, so the worker serves with user embeddings throughout.
(1) Freshness: events offered at --rate events/s for --seconds; event-to-recommendation
    latency from the worker's histogram (input event's Kafka timestamp to list published),
    and from the event's send to the list's record timestamp (set when the worker hands
    the list to its producer), p50 / p99, also per 10 s and per 1 s window.
(2) Pull: --requests sequential GET /recommendations/{user} for known users, p50 / p99.

    python benchmarks/serving_latency.py --rate 1000 --seconds 60 --requests 1000 --out out/serving
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from load import (  # benchmarks/load.py
    bucket_delta,
    by_window,
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
        client = asyncio.run(offer_load(settings, args.rate, args.seconds, timeline=timeline))
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
