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
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from load import histogram_quantiles, offer_load, stage_means_ms  # benchmarks/load.py

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from streamrec.settings import Settings


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
        stages = stage_means_ms(metrics_text)
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
        "mean_ms_per_batch": stages,
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
