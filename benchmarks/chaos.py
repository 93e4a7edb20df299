"""Chaos check: SIGKILL the stream worker K times (and optionally stop Redis) during a
replay; the final state must equal a clean run's, key for key.

    python benchmarks/chaos.py --events 50000 --kills 5 --seeds 1 2 3 --out out/chaos

The events are the product's mix (``synthetic``: views, clicks and purchases on their
three topics, equal timestamps within a user, late events); ``--data Video.txt`` replays
Amazon Games (all views) instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from infra.chaos import ChaosRunner
from recmodels.datasets import read_seq_stream, synthetic_stream


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (the product's mix) or a 'user item' file (Games)")
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--redis-outage", type=float, default=0.0,
                   help="also stop Redis for this many seconds mid-replay")
    p.add_argument("--redis-crashes", type=int, default=0,
                   help="SIGKILL Redis this many times, restarting it from its AOF")
    p.add_argument("--lose-writes", action="store_true",
                   help="restart each crashed Redis from an AOF copied a few hundred applied "
                        "events earlier (what a machine crash with appendfsync everysec loses)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", default="out/chaos")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("aiokafka", "kafka", "infra.stack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    events = list(synthetic_stream(args.events, seed=args.seeds[0])) \
        if args.data == "synthetic" else read_seq_stream(Path(args.data))[: args.events]
    verdicts = []
    with ChaosRunner(events) as runner:
        for seed in args.seeds:
            verdict = runner.check(seed, args.kills, args.redis_outage, args.redis_crashes,
                                   args.lose_writes)
            verdicts.append(verdict)
            print(f"seed {seed}: {'IDENTICAL' if verdict.identical else 'DIFFERENT'}  "
                  f"clean {verdict.clean.seconds:.1f} s, chaos {verdict.chaos.seconds:.1f} s, "
                  f"kills at {verdict.chaos.kills} applied events, redis outage "
                  f"{verdict.chaos.redis_outage_s:.0f} s, redis crashes at "
                  f"{verdict.chaos.redis_crashes} losing {verdict.chaos.lost_on_crash} "
                  f"applied events, applied {verdict.chaos.applied}"
                  f"/{len(events)}, differing keys: {verdict.differing_keys[:10]}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"events": len(events), "kills": args.kills, "redis_outage_s": args.redis_outage,
              "redis_crashes": args.redis_crashes, "lose_writes": args.lose_writes,
              "data": args.data, "all_identical": all(v.identical for v in verdicts),
              "verdicts": [dataclasses.asdict(v) for v in verdicts]}
    (out / "chaos.json").write_text(json.dumps(result, indent=2))
    print(f"verdict: {'PASS' if result['all_identical'] else 'FAIL'} -> {out / 'chaos.json'}")
    return 0 if result["all_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
