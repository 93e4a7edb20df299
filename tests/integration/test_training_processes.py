"""Training past one process: ``streamrec train`` under ``torchrun`` (gloo, two CPU
processes) against one process, ranks whose weights drift apart, and the GPU check script
(its CPU half here; the GPU half where one is present)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recmodels.parallel import RanksDiverged, Workers

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SMALL = ["max_len=10", "hidden=32", "n_blocks=1", "n_heads=2", "batch_size=32",
         "max_epochs=8", "patience=8", "lr=0.005"]


def write_walks(path: Path, n_users: int = 800, n_items: int = 60, seed: int = 0) -> Path:
    """Users stepping through the catalogue by +1 or +3: learnable, not by popularity."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(n_users):
        item, step = int(rng.integers(0, n_items)), 1 if u % 2 else 3
        for _ in range(int(rng.integers(5, 10))):
            lines.append(f"u{u} {item % n_items + 1}")
            item += step
    path.write_text("\n".join(lines) + "\n")
    return path


def _train(argv: list[str], out: Path) -> dict[str, object]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, object] = json.loads((out / "metrics.json").read_text())
    return report


def test_two_processes_under_torchrun_learn_as_well_as_one(tmp_path: Path) -> None:
    data = write_walks(tmp_path / "walks.txt")
    args = ["train", "--data", str(data), "--format", "seq", "--time-budget", "60",
            "--no-progress"] + [a for s in SMALL for a in ("--set", s)]
    one = _train([str(BIN / "streamrec"), *args, "--out", str(tmp_path / "one")],
                 tmp_path / "one")
    two = _train([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2",
                  "--no-python", str(BIN / "streamrec"), *args, "--out", str(tmp_path / "two")],
                 tmp_path / "two")
    assert one["processes"] == 1 and two["processes"] == 2
    # one checkpoint, written by rank 0, loadable like any other
    assert (tmp_path / "two" / "checkpoint" / "model.safetensors").is_file()
    ndcg = {name: r["valid"]["sampled"]["ndcg@10"]  # type: ignore[index]
            for name, r in (("one", one), ("two", two))}
    assert ndcg["one"] > 0.5, ndcg  # the walks are learnt (popularity scores ~0.2)
    assert abs(ndcg["two"] - ndcg["one"]) < 0.05, ndcg
    # two processes take half the steps per epoch each
    assert len(two["history"]) == len(one["history"])  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _perturbed_rank(rank: int, port: int, perturb: bool) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        if perturb and rank == 1:
            with torch.no_grad():
                model.weight[0, 0] += 1e-3
        Workers(rank, 2).check_in_sync(model)
    finally:
        dist.destroy_process_group()


def test_ranks_whose_weights_differ_are_stopped() -> None:
    mp.spawn(_perturbed_rank, args=(_free_port(), False), nprocs=2, join=True)
    with pytest.raises(mp.ProcessRaisedException, match=RanksDiverged.__name__):
        mp.spawn(_perturbed_rank, args=(_free_port(), True), nprocs=2, join=True)


def test_gpu_check_trains_reports_and_a_cpu_worker_loads_the_model(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                           "--data", "generated", "--tiny", "--max-epochs", "8",
                           "--budget", "120",  # epochs, not seconds, decide: load-proof
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["gpu"] == torch.cuda.is_available()
    cpu = report["runs"]["cpu"]
    assert cpu["epochs"] >= 1 and cpu["epoch_seconds"] > 0
    assert cpu["valid_sampled"]["ndcg@10"] > 0.3  # it learnt the walks
    assert 0 < cpu["test_full"]["ndcg@10"] <= cpu["test_full"]["hr@10"]
    load = report["cpu_worker_load"]
    assert load["loaded_on"] == "cpu" and load["users_compared"] > 100
    assert load["top10_agreement"] >= 0.95

