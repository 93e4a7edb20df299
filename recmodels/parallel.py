"""Data-parallel training under ``torchrun``: one process per core or GPU.

``torchrun --nproc-per-node N`` starts N copies of the program with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` set. :func:`join` turns those into a :class:`Workers`
(gloo on the CPU, NCCL on GPUs); without them, or with ``WORLD_SIZE=1``, it returns the
single process and nothing distributed is touched. Every rank walks the same seeded batch
order and takes every N-th batch; PyTorch's DistributedDataParallel averages the gradients,
so one step of N processes is one step over N batches, and the learning rate is scaled by
sqrt(N). Validation is split over the ranks by user and the shards' means are combined;
decisions that must agree (the time budget, early stopping) are rank 0's, broadcast.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


class RanksDiverged(RuntimeError):
    """The ranks' weights differ after a step: the gradients were not averaged."""


@dataclass(frozen=True, slots=True)
class Workers:
    """This process's place among the training processes (rank 0 of 1: no others)."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"  # where collectives' tensors live (NCCL needs the GPU)

    @property
    def main(self) -> bool:
        """Whether this process writes outputs and evaluates (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, batches: Sequence[T]) -> list[T]:
        """This rank's share of an epoch's batches: every ``world``-th, the same count on
        every rank (the last ``len % world`` batches of the epoch's order are left out:
        a step waits for every rank)."""
        usable = len(batches) - len(batches) % self.world
        return list(batches[self.rank:usable:self.world])

    def decide(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (the others' arguments are ignored)."""
        if not self.distributed:
            return value
        box = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(box, src=0)
        return float(box.item())

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        if not self.distributed:
            return value
        box = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(box)
        return float(box.item()) / self.world

    def mean_of_shards(self, metrics: dict[str, float], names: Sequence[str]) -> dict[str, float]:
        """Metrics ``names`` over every rank's shard of users: the shards' means weighted by
        their ``users`` (what one evaluation of all users gives)."""
        if not self.distributed:
            return {name: metrics[name] for name in names}
        users = metrics.get("users", 0.0)
        box = torch.tensor([users, *(users * metrics.get(n, 0.0) for n in names)],
                           dtype=torch.float64, device=self.device)
        dist.all_reduce(box)
        total = float(box[0])
        return {n: float(box[i + 1]) / total if total else 0.0 for i, n in enumerate(names)}

    @property
    def lr_factor(self) -> float:
        """The learning rate's factor for ``world`` times the batch: sqrt(world) (AdamW;
        chosen on validation, docs/scaling.md)."""
        return math.sqrt(self.world)

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` under DistributedDataParallel when there are other ranks."""
        if not self.distributed:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def check_in_sync(self, model: nn.Module) -> None:
        """Raise :class:`RanksDiverged` when this rank's weights differ from rank 0's."""
        if not self.distributed:
            return
        with torch.no_grad():
            mine = torch.stack([p.detach().double().sum() for p in model.parameters()])
        mine = mine.to(self.device)
        first = mine.clone()
        dist.broadcast(first, src=0)
        if not torch.allclose(mine, first, rtol=1e-6, atol=1e-9):
            raise RanksDiverged(f"train: rank {self.rank}'s weights differ from rank 0's")

    def close(self) -> None:
        """Leave the process group together (no rank destroys it while another's last
        collective is in flight). The process should then end without the interpreter's
        teardown: see ``streamrec.app.train_cli.leave_rank``."""
        if self.distributed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


SINGLE = Workers()


def join(device: torch.device) -> tuple[Workers, torch.device]:
    """The training processes started by ``torchrun`` (SINGLE outside it), and the device
    this rank trains on (``cuda:LOCAL_RANK`` for a CUDA device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Workers(dist.get_rank(), dist.get_world_size(), str(device)), device
