"""Epoch time and quality of SASRec's training losses on a large catalogue, side by side.

The catalogue: the three Amazon categories in ``../shared/data`` taken together (Games,
Sports and Toys; users and items of each kept apart), 86k users and 54k items, a shop-sized
catalogue of real sequences. Each loss trains for the same wall-clock budget with the
product's training loop (``recmodels.training.train``: the same selection on the
validation split, full ranking, a seeded sample of users); reported per loss: seconds per
epoch, epochs, and the best validation NDCG@10 and HR@10 (full ranking and sampled). The
test split is not used.

    python benchmarks/loss_cost.py --budget 420 --out out/loss_cost
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from recmodels.evaluation import EvalConfig, Evaluator
from recmodels.sasrec import SASRecConfig
from recmodels.split import leave_one_out
from recmodels.training import train
from streamrec.app.train_cli import load_sequences

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PARTS = {"games": DATA / "games" / "Video.txt",
         "sports": DATA / "amazon-s3rec" / "Sports_and_Outdoors.txt",
         "toys": DATA / "amazon-s3rec" / "Toys_and_Games.txt"}
LOSSES: dict[str, dict[str, Any]] = {
    "full softmax": {"loss": "ce"},
    "sampled, 1,024 negatives": {"loss": "sampled", "n_negatives": 1024},
    "sampled, 4,096 negatives": {"loss": "sampled", "n_negatives": 4096},
}


def union() -> dict[str, list[str]]:
    sequences: dict[str, list[str]] = {}
    for name, path in PARTS.items():
        if not path.exists():
            raise SystemExit(f"loss_cost: {path} not found (needs ../shared/data)")
        for user, items in load_sequences(path, "seq").items():
            sequences[f"{name}:{user}"] = [f"{name}:{item}" for item in items]
    return sequences


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=420.0, help="seconds of training per loss")
    p.add_argument("--valid-users", type=int, default=5000,
                   help="validation users per evaluation (seeded sample)")
    p.add_argument("--losses", nargs="*", default=list(LOSSES), choices=list(LOSSES))
    p.add_argument("--out", default="out/loss_cost")
    args = p.parse_args()
    split = leave_one_out(union())
    print(f"{len(split.users)} users, {split.n_items} items; {args.budget:.0f} s per loss",
          flush=True)
    evaluator = Evaluator(split, EvalConfig(ks=(10,), max_users=args.valid_users))
    runs: dict[str, Any] = {}
    for name in args.losses:
        config = replace(SASRecConfig(), **LOSSES[name])
        started = time.monotonic()
        checkpoint = train(split, config, time_budget_s=args.budget, evaluator=evaluator)
        best = max(checkpoint.history, key=lambda r: r.get("valid_full_ndcg@10", -1.0))
        runs[name] = {
            "config": LOSSES[name], "epochs": len(checkpoint.history),
            "epoch_seconds": checkpoint.meta["epoch_seconds"],
            "wall_seconds": time.monotonic() - started,
            "best_epoch": int(best["epoch"]),
            **{k: best[k] for k in best if k.startswith("valid_")},
            "history": checkpoint.history}
        print(f"{name:>26}: {runs[name]['epoch_seconds']:6.1f} s/epoch, "
              f"{runs[name]['epochs']} epochs, valid full NDCG@10 "
              f"{best['valid_full_ndcg@10']:.4f} HR@10 {best['valid_full_hr@10']:.4f}, "
              f"sampled NDCG@10 {best['valid_ndcg@10']:.4f}", flush=True)
    reference = runs.get("full softmax")
    if reference is not None:
        for run in runs.values():
            run["epoch_time_vs_full"] = run["epoch_seconds"] / reference["epoch_seconds"]
            run["valid_full_ndcg_vs_full"] = (run["valid_full_ndcg@10"]
                                              / reference["valid_full_ndcg@10"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"users": len(split.users), "items": split.n_items, "budget_s": args.budget,
              "valid_users": len(evaluator.users), "threads": torch.get_num_threads(),
              "runs": runs}
    (out / "loss_cost.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    for name, run in runs.items():
        if "epoch_time_vs_full" in run:
            print(f"{name:>26}: epoch time x{run['epoch_time_vs_full']:.2f} of full softmax, "
                  f"valid full NDCG@10 x{run['valid_full_ndcg_vs_full']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
