"""Time for SASRec (committed default config) to reach NDCG@10 0.536 on Amazon Games, sampled
protocol (100 negatives), selected on the VALIDATION split only.

The model is trained epoch by epoch exactly as ``recmodels.training.train`` does (same
epoch runner, same plateau learning-rate decay); after every epoch validation NDCG@10
(sampled, every evaluated user) is measured. The first epoch whose validation NDCG@10 is
>= the target stops the run: its wall clock (since the data was loaded; evaluations
included, and training alone) and sequences/s are reported, and only then is that
checkpoint scored on the test split (HR@10 / NDCG@10, sampled). Nothing is chosen on test.
Runs on the CPU always, and again on the GPU when torch.cuda.is_available().

    python benchmarks/train_speed.py --time-budget 1800 --threads 2 --out out/train_speed
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from recmodels.evaluation import EvalConfig, Evaluator
from recmodels.sasrec import SASRec, SASRecConfig, SASRecRecommender
from recmodels.split import LeaveOneOutSplit
from recmodels.training import _EpochRunner, training_data  # the product's epoch loop
from streamrec.app.train_cli import load_split

TARGET = 0.536  # SASRec paper, Games, test NDCG@10 (shared/data/README.md)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_device(split: LeaveOneOutSplit, device: torch.device, budget_s: float,
               target: float, seed: int, started: float) -> dict[str, Any]:
    """Train until validation NDCG@10 >= target or the budget is spent."""
    config = replace(SASRecConfig(), seed=seed)
    torch.manual_seed(config.seed)
    model = SASRec(split.n_items, config).to(device)
    data = training_data(split.training_sequences("valid"), config.max_len)
    runner = _EpochRunner(model, data, config, device, progress=False)
    evaluator = Evaluator(split, EvalConfig(ks=(10,)))
    n_sequences = len(data.lengths)
    train_s = eval_s = 0.0
    best = -math.inf
    history: list[dict[str, float]] = []
    reached: dict[str, Any] | None = None
    slowest = 0.0
    for epoch in range(1, config.max_epochs + 1):
        if time.monotonic() - started + slowest > budget_s:
            break
        t0 = time.monotonic()
        loss = runner.run(epoch)
        sync(device)
        t1 = time.monotonic()
        valid = evaluator.evaluate(SASRecRecommender(model), "valid", "sampled")
        sync(device)
        t2 = time.monotonic()
        train_s += t1 - t0
        eval_s += t2 - t1
        slowest = max(slowest, t2 - t0)
        row = {"epoch": epoch, "loss": loss, "valid_hr@10": valid["hr@10"],
               "valid_ndcg@10": valid["ndcg@10"], "train_s": train_s, "eval_s": eval_s,
               "wall_s": t2 - started}
        history.append(row)
        print(f"[{device.type}] epoch {epoch:3d} loss {loss:.4f} valid HR@10 "
              f"{valid['hr@10']:.4f} NDCG@10 {valid['ndcg@10']:.4f}  train {train_s:6.1f}s "
              f"wall {row['wall_s']:6.1f}s", flush=True)
        if valid["ndcg@10"] >= target:
            test = evaluator.evaluate(SASRecRecommender(model), "test", "sampled")
            reached = {"epoch": epoch, "wall_s": row["wall_s"], "train_s": train_s,
                       "eval_s": eval_s, "valid_hr@10": valid["hr@10"],
                       "valid_ndcg@10": valid["ndcg@10"], "test_hr@10": test["hr@10"],
                       "test_ndcg@10": test["ndcg@10"],
                       "sequences_per_s": n_sequences * epoch / train_s}
            break
        if valid["ndcg@10"] > best:
            best = valid["ndcg@10"]
        elif config.plateau_decay < 1.0:  # as recmodels.training.train does
            for group in runner.optimizer.param_groups:
                group["lr"] *= config.plateau_decay
    return {"device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "budget_s": budget_s,
            "training_sequences": n_sequences, "reached": reached,
            "best_valid_ndcg@10": max((r["valid_ndcg@10"] for r in history), default=None),
            "epoch_s": train_s / max(len(history), 1),
            "sequences_per_s": n_sequences * len(history) / train_s if train_s else None,
            "history": history}


def plot(runs: list[dict[str, Any]], target: float, path: Path) -> None:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        h = run["history"]
        ax.plot([r["wall_s"] for r in h], [r["valid_ndcg@10"] for r in h], marker=".",
                label=f"{run['device']} ({run['threads']} threads)" if run["device"] == "cpu"
                else run["device"])
    ax.axhline(target, color="red", lw=0.8, label=f"target {target}")
    ax.set(xlabel="wall clock (s)", ylabel="validation NDCG@10 (sampled)",
           title="SASRec on Games: time to target")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True,
                   help="Amazon Games as preprocessed for the SASRec paper (Video.txt)")
    p.add_argument("--time-budget", type=float, default=1800.0,
                   help="seconds per device, data loading and evaluations included")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--target", type=float, default=TARGET, help="validation NDCG@10")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cpu-only", action="store_true", help="skip the GPU even when present")
    p.add_argument("--out", default="out/train_speed")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    runs = []
    load_avg = [round(x, 2) for x in os.getloadavg()]
    for device in devices:
        started = time.monotonic()
        split = load_split(args.data, "seq")
        load_s = time.monotonic() - started
        run = run_device(split, device, args.time_budget, args.target, args.seed, started)
        run["load_s"] = load_s
        runs.append(run)
    result = {"data": args.data, "target_valid_ndcg@10": args.target,
              "config": SASRecConfig().to_dict(), "cpu_count": os.cpu_count(),
              "load_avg_start": load_avg,
              "load_avg_end": [round(x, 2) for x in os.getloadavg()], "runs": runs}
    (out / "train_speed.json").write_text(json.dumps(result, indent=2))
    plot(runs, args.target, out / "train_speed.png")
    print(f"\n{'device':<8} {'threads':>7} {'epochs':>6} {'wall s':>8} {'train s':>8} "
          f"{'seq/s':>8} {'valid NDCG':>10} {'test HR@10':>10} {'test NDCG':>10}")
    for run in runs:
        r = run["reached"]
        if r is None:
            print(f"{run['device']:<8} {run['threads']:>7} not reached within "
                  f"{run['budget_s']:.0f}s (best valid NDCG@10 {run['best_valid_ndcg@10']})")
            continue
        print(f"{run['device']:<8} {run['threads']:>7} {r['epoch']:>6} {r['wall_s']:>8.1f} "
              f"{r['train_s']:>8.1f} {r['sequences_per_s']:>8.0f} {r['valid_ndcg@10']:>10.4f} "
              f"{r['test_hr@10']:>10.4f} {r['test_ndcg@10']:>10.4f}")
    print(f"wrote {out / 'train_speed.json'} and {out / 'train_speed.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
