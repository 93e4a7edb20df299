"""The GPU path in one script: train SASRec on Games on the GPU (CUDA, bf16/fp16 autocast)
and on the CPU with the same budget, report epoch time and HR@10/NDCG@10 (sampled and full
ranking, validation-selected), and load the GPU-trained model the way a CPU worker does
(safetensors blobs -> ``online_model`` on the CPU), checking that it ranks as it did on
the GPU. Without a GPU it runs the CPU half and says so.

    python benchmarks/gpu_check.py --budget 300 --out out/gpu_check
    python benchmarks/gpu_check.py --data generated --tiny --max-epochs 8 --budget 120  # tests

``--data`` defaults to ``../shared/data/games/Video.txt`` when it is there (Amazon Video
Games as preprocessed for the SASRec paper), else a generated stand-in.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recmodels.checkpoint import Checkpoint
from recmodels.evaluation import EvalConfig, Evaluator
from recmodels.sasrec import SASRecConfig
from recmodels.split import LeaveOneOutSplit, leave_one_out
from recmodels.training import train
from streamrec.app.train_cli import load_split
from streamrec.state.model_holder import online_model
from streamrec.state.model_store import from_blobs, to_blobs

ROOT = Path(__file__).resolve().parents[1]
GAMES = ROOT.parent / "shared" / "data" / "games" / "Video.txt"
TINY = {"max_len": 20, "hidden": 32, "n_blocks": 1, "n_heads": 1, "batch_size": 64}


def generated_split(n_users: int = 600, n_items: int = 120, seed: int = 5) -> LeaveOneOutSplit:
    """Users walking through the catalogue in steps fixed per user: SASRec learns it."""
    rng = np.random.default_rng(seed)
    sequences: dict[str, list[str]] = {}
    for u in range(n_users):
        item, step = int(rng.integers(0, n_items)), int(rng.integers(1, 4))
        seq = []
        for _ in range(int(rng.integers(5, 15))):
            seq.append(f"i{item % n_items}")
            item += step
        sequences[f"u{u}"] = seq
    return leave_one_out(sequences)


def run_on(device: torch.device, split: LeaveOneOutSplit, config: SASRecConfig,
           budget: float) -> tuple[Checkpoint, dict[str, Any]]:
    started = time.monotonic()
    checkpoint = train(split, config, time_budget_s=budget, device=device,
                       evaluator=Evaluator(split, EvalConfig(ks=(10,))))
    seconds = time.monotonic() - started
    recommender = checkpoint.recommender(device)
    embeddings = recommender.item_embeddings().cpu()
    evaluator = Evaluator(split, EvalConfig(ks=(10,)))
    metrics = {f"{stage}_{protocol}": evaluator.evaluate(recommender, stage, protocol, embeddings)
               for stage in ("valid", "test") for protocol in ("sampled", "full")}
    return checkpoint, {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "train_seconds": round(seconds, 1), "epochs": len(checkpoint.history),
        "epoch_seconds": round(float(checkpoint.meta["epoch_seconds"]), 3),
        "best_epoch": checkpoint.meta["best_epoch"],
        **{name: {k: round(m[k], 4) for k in ("hr@10", "ndcg@10")}
           for name, m in metrics.items()},
    }


def cpu_worker_load(checkpoint: Checkpoint, trained_on: torch.device,
                    split: LeaveOneOutSplit, users: int = 256) -> dict[str, Any]:
    """Publish the checkpoint as the trainer does (safetensors + JSON), load it as a CPU
    worker does, and compare its top-10 with the trained model's on its own device."""
    weights, meta = to_blobs(checkpoint, "v-check", {}, int(time.time() * 1000))
    online = online_model(from_blobs(weights, meta, "gpu_check"))
    histories = [seq for seq in split.training_sequences("test")[:users] if seq]
    # the online model's item rows are the vocabulary in order (row = index + 1)
    user_vectors = online.user_vectors([[i - 1 for i in h] for h in histories])
    online_top = np.argsort(-(user_vectors @ online.item_vectors.T), axis=1)[:, :10] + 1
    reference = checkpoint.recommender(trained_on).score(histories)[:, 1:].float().cpu()
    trained_top = (torch.topk(reference, 10, dim=1).indices + 1).numpy()
    agreement = float(np.mean([len(set(a) & set(b)) / 10
                               for a, b in zip(online_top, trained_top, strict=True)]))
    return {"loaded_on": "cpu", "weights_bytes": len(weights), "users_compared": len(histories),
            "top10_agreement": round(agreement, 4)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=str(GAMES) if GAMES.exists() else "generated",
                   help="a `user item` file (seq format) or 'generated'")
    p.add_argument("--budget", type=float, default=300.0, help="training seconds per device")
    p.add_argument("--tiny", action="store_true", help="a small model (tests)")
    p.add_argument("--max-epochs", type=int, help="at most this many epochs per device")
    p.add_argument("--out", default="out/gpu_check")
    args = p.parse_args()
    split = generated_split() if args.data == "generated" else load_split(args.data, "seq")
    overrides: dict[str, Any] = {**(TINY if args.tiny else {})}
    if args.max_epochs:
        overrides["max_epochs"] = args.max_epochs
    config = SASRecConfig.from_dict({**SASRecConfig().to_dict(), **overrides})
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        devices.insert(0, torch.device("cuda"))
    runs: dict[str, Any] = {}
    checkpoints: dict[str, Checkpoint] = {}
    for device in devices:
        checkpoints[device.type], runs[device.type] = run_on(device, split, config, args.budget)
        print(f"{device.type}: {json.dumps(runs[device.type])}", flush=True)
    source = devices[0]
    result = {
        "data": args.data, "users": len(split.users), "items": split.n_items,
        "budget_s": args.budget, "gpu": torch.cuda.is_available(),
        "note": None if torch.cuda.is_available() else "no GPU here: the CPU run only",
        "runs": runs,
        "cpu_worker_load": {"trained_on": source.type,
                            **cpu_worker_load(checkpoints[source.type], source, split)},
    }
    if "cuda" in runs:
        result["epoch_speedup"] = round(runs["cpu"]["epoch_seconds"]
                                        / runs["cuda"]["epoch_seconds"], 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
