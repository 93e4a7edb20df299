"""Offline quality benchmark on Amazon Games (Video.txt): popularity, Markov, SASRec.

Usage::

    python benchmarks/quality.py path/to/Video.txt /tmp/quality \
        [--time-budget 1200] [--seed 42] [--threads 2] [--skip-sasrec]

Leave-one-out split, sampled (100 negatives) and full-ranking protocols, valid and test.
SASRec is trained with the default hyperparameters, selected on validation only, inside
the wall-clock budget (which includes its final evaluation). Prints a table and writes
``OUT/quality.json`` plus SASRec's ``metrics.json``, learning curves and checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch

from recmodels.evaluation import Evaluator
from streamrec.app.train_cli import evaluate_recommender, format_table, load_split, train_main

REFERENCE = {  # shared/data/README.md, test split (HR@10, NDCG@10)
    "popularity": {"sampled": (0.4774, 0.2829), "full": (0.0190, 0.0099)},
    "markov": {"sampled": (0.5090, 0.3374), "full": (0.0817, 0.0499)},
    "sasrec": {"sampled": (0.7410, 0.5360)},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="path to Video.txt (never copied into the repo)")
    parser.add_argument("out", help="output folder for JSON, plots and the checkpoint")
    parser.add_argument("--format", default="seq", choices=("seq", "ml100k"))
    parser.add_argument("--time-budget", type=float, default=1200.0,
                        help="SASRec wall-clock seconds, final evaluation included")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--skip-sasrec", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    split = load_split(args.data, args.format)
    evaluator = Evaluator(split)
    rows = {}
    seconds = {}
    for name in ("popularity", "markov"):
        started = time.monotonic()
        rows[name] = evaluate_recommender(evaluator, baseline=name)
        seconds[name] = time.monotonic() - started
    if not args.skip_sasrec:
        started = time.monotonic()
        code = train_main(args.data, args.format, args.time_budget, str(out / "sasrec"),
                          seed=args.seed, threads=args.threads, progress=False)
        seconds["sasrec"] = time.monotonic() - started
        if code != 0:
            return code
        report = json.loads((out / "sasrec" / "metrics.json").read_text(encoding="utf-8"))
        rows["sasrec"] = {stage: report[stage] for stage in ("valid", "test")}

    print(format_table(rows))
    print("\nreference (README, test HR@10/NDCG@10):")
    for name, by_protocol in REFERENCE.items():
        if name in rows:
            for protocol, (hr, ndcg) in by_protocol.items():
                got = rows[name]["test"][protocol]
                print(f"  {name:<10} {protocol:<8} ref {hr:.4f}/{ndcg:.4f}  "
                      f"got {got['hr@10']:.4f}/{got['ndcg@10']:.4f}")
    summary = {"data": args.data, "users": len(split.users), "items": split.n_items,
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "seconds": seconds, "reference": REFERENCE, "results": rows}
    (out / "quality.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"\nwrote {out / 'quality.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
