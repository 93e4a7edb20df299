"""Training SASRec: a function that returns a :class:`Checkpoint`.

Model selection and early stopping use the validation split only
(``config.select_protocol`` and ``config.select_metric``; both protocols are recorded per
epoch); the test split is never looked at here. Training stops at ``max_epochs``, after
``patience`` evaluations without improvement, or before an epoch that would not finish
inside the wall-clock budget.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recmodels.checkpoint import Checkpoint
from recmodels.evaluation import EvalConfig, EvalProtocol, Evaluator
from recmodels.losses import batch_loss
from recmodels.parallel import SINGLE, Workers
from recmodels.sasrec import SASRec, SASRecConfig, SASRecRecommender
from recmodels.split import LeaveOneOutSplit

log = logging.getLogger(__name__)

Clock = Callable[[], float]
BUCKET_BATCHES = 32  # batches whose users are sorted by length together (less padding)
REFIT_DATA_RATIO = 1.15  # refit data (train + valid items) relative to the training parts


@dataclass(frozen=True)
class TrainingData:
    """Right-aligned next-item examples: ``inputs[i, t]`` predicts ``targets[i, t]``."""

    inputs: torch.Tensor  # [N, max_len], 0 = padding
    targets: torch.Tensor  # [N, max_len], 0 where there is no target
    lengths: torch.Tensor  # [N] real positions per row


def training_data(sequences: Sequence[Sequence[int]], max_len: int) -> TrainingData:
    """One example per sequence with >= 2 items: its last ``max_len + 1`` items, shifted."""
    rows = [list(seq[-(max_len + 1):]) for seq in sequences if len(seq) >= 2]
    inputs = torch.zeros((len(rows), max_len), dtype=torch.long)
    targets = torch.zeros((len(rows), max_len), dtype=torch.long)
    lengths = torch.zeros(len(rows), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row) - 1
        inputs[i, max_len - n:] = torch.tensor(row[:-1])
        targets[i, max_len - n:] = torch.tensor(row[1:])
        lengths[i] = n
    return TrainingData(inputs, targets, lengths)


def epoch_batches(data: TrainingData, batch_size: int,
                  generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Row indices per batch: a seeded shuffle, rows of similar length grouped together
    in buckets of ``BUCKET_BATCHES`` batches, batch order shuffled again."""
    order = torch.randperm(len(data.lengths), generator=generator)
    bucket = batch_size * BUCKET_BATCHES
    batches: list[torch.Tensor] = []
    for start in range(0, len(order), bucket):
        chunk = order[start:start + bucket]
        chunk = chunk[torch.argsort(data.lengths[chunk], stable=True)]
        batches.extend(torch.split(chunk, batch_size))
    for i in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[i]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _progress(total: int, desc: str, enabled: bool) -> object:
    if not enabled:
        return None
    from tqdm import tqdm  # noqa: PLC0415 - optional, only for interactive runs

    return tqdm(total=total, desc=desc, unit="batch", leave=False)


def default_evaluator(split: LeaveOneOutSplit) -> Evaluator:
    """Sampled-protocol validation at K = 10."""
    return Evaluator(split, EvalConfig(ks=(10,)))


class _BatchLoss(nn.Module):
    """The model with its loss as ``forward``, so DistributedDataParallel sees the step."""

    def __init__(self, model: SASRec, config: SASRecConfig,
                 negatives: torch.Generator) -> None:
        super().__init__()
        self.model, self.config, self.negatives = model, config, negatives

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return batch_loss(self.model, inputs, targets, self.config, self.negatives)


class _EpochRunner:
    """Optimizer, scaler and data of one training run; ``run()`` trains one epoch (this
    rank's share of it when ``workers`` has other ranks)."""

    def __init__(self, model: SASRec, data: TrainingData, config: SASRecConfig,
                 device: torch.device, progress: bool, workers: Workers = SINGLE) -> None:
        if len(data.lengths) == 0:
            raise ValueError("train: no user has two training items to learn from")
        self.model, self.data, self.config, self.device = model, data, config, device
        self.progress, self.workers = progress, workers
        # the batch order: the same on every rank; the sampled negatives: a rank's own
        # (one process draws both from one generator, as it always has)
        self.generator = torch.Generator().manual_seed(config.seed)
        negatives = (torch.Generator().manual_seed(config.seed + 1 + workers.rank)
                     if workers.distributed else self.generator)
        self.step = workers.wrap(_BatchLoss(model, config, negatives), device)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr * workers.lr_factor,
                                           weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda"
                                           and not torch.cuda.is_bf16_supported())
        self.n_batches = math.ceil(len(data.lengths) / config.batch_size)
        self.mean_positions = float(data.lengths.sum()) / self.n_batches

    def run(self, epoch: int) -> float:
        """One pass over the data; returns the mean batch loss (of every rank)."""
        self.model.train()
        total, count = 0.0, 0
        batches = self.workers.shard(list(epoch_batches(self.data, self.config.batch_size,
                                                        self.generator)))
        bar = _progress(len(batches), f"epoch {epoch}", self.progress and self.workers.main)
        for rows in batches:
            width = int(self.data.lengths[rows].max())
            inputs = self.data.inputs[rows, -width:].to(self.device, non_blocking=True)
            targets = self.data.targets[rows, -width:].to(self.device, non_blocking=True)
            with _autocast(self.device):
                loss: torch.Tensor = self.step(inputs, targets)
                # batches hold users of similar length, so their position counts differ
                # a lot: weigh each batch by its share of positions, so every position
                # counts the same (a plain batch mean would drown long sequences)
                loss = loss * (float((targets != 0).sum()) / self.mean_positions)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += float(loss.detach())
            count += 1
            if bar is not None:
                bar.update(1)  # type: ignore[attr-defined]
                bar.set_postfix(loss=f"{total / count:.4f}")  # type: ignore[attr-defined]
        if bar is not None:
            bar.close()  # type: ignore[attr-defined]
        mean = self.workers.mean(total / max(count, 1))
        if not math.isfinite(mean):
            raise FloatingPointError(f"train: epoch {epoch}: loss is not finite")
        return mean


def patience_factor(patience_users: int, validated_users: int) -> int:
    """How many evaluations count as one for early stopping and the plateau decay: 1 for
    a validation of at least ``patience_users`` users, ``ceil(patience_users / users)`` for
    a smaller one (on 943 MovieLens 100K users, an evaluation's NDCG@10 moves by more than
    an epoch's progress)."""
    return max(1, math.ceil(patience_users / max(validated_users, 1)))


def _state(model: SASRec) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train(split: LeaveOneOutSplit, config: SASRecConfig | None = None, *,
          time_budget_s: float | None = None, device: str | torch.device | None = None,
          evaluator: Evaluator | None = None, init: SASRec | None = None,
          reserve_for_refit: bool = False, progress: bool = False,
          clock: Clock = time.monotonic, workers: Workers = SINGLE) -> Checkpoint:
    """Train on the training parts of ``split``; return the checkpoint of the best
    validation evaluation (or the last epoch when nothing was evaluated).

    ``init`` warm-starts from an existing model (see :func:`checkpoint.warm_start`);
    ``reserve_for_refit`` stops early enough to leave time for :func:`refit` with the best
    epoch count inside the same budget; ``clock`` is injected so budgets can be tested.
    Under ``torchrun`` (``workers`` from :func:`recmodels.parallel.join`) every rank calls
    this; each validates its share of the users, rank 0 decides, and its checkpoint is the
    one to keep."""
    config = config or SASRecConfig()
    dev = pick_device(device)
    started = clock()
    torch.manual_seed(config.seed)
    model = (init if init is not None else SASRec(split.n_items, config)).to(dev)
    if model.n_items != split.n_items:
        raise ValueError(f"train: model has {model.n_items} items, split {split.n_items}")
    evaluator = evaluator or default_evaluator(split)
    data = training_data(split.training_sequences("valid"), config.max_len)
    runner = _EpochRunner(model, data, config, dev, progress, workers)
    loss = config.loss_for(split.n_items)
    if workers.main:
        log.info("train: loss=%s%s (%d items)", loss,
                 f" with {config.n_negatives} negatives" if loss == "sampled" else "",
                 split.n_items)
    refit_ratio = REFIT_DATA_RATIO if reserve_for_refit else 0.0
    wait = patience_factor(config.patience_users, len(evaluator.users))
    if wait > 1 and workers.main:
        log.info("train: %d validation users (< %d): early stop after %d evaluations "
                 "without improvement, plateau decay after every %d", len(evaluator.users),
                 config.patience_users, config.patience * wait, wait)
    history: list[dict[str, float]] = []
    best_score, best_epoch, stale = -math.inf, 0, 0
    best_state = _state(model)
    slowest_epoch, train_seconds = 0.0, 0.0
    for epoch in range(1, config.max_epochs + 1):
        mean_epoch = train_seconds / max(epoch - 1, 1)
        needed = slowest_epoch + refit_ratio * mean_epoch * max(best_epoch, epoch)
        over = time_budget_s is not None and clock() - started + needed > time_budget_s
        if workers.decide(float(over)):
            log.info("train: stopping before epoch %d, time budget %.0fs", epoch,
                     time_budget_s)
            break
        epoch_start = clock()
        row: dict[str, float] = {"epoch": float(epoch), "loss": runner.run(epoch)}
        train_seconds += clock() - epoch_start
        if epoch % config.eval_every == 0 or epoch == config.max_epochs:
            recommender = SASRecRecommender(model)
            selected = 0.0
            prefixes: dict[EvalProtocol, str] = {"sampled": "valid_", "full": "valid_full_"}
            shards = evaluator.evaluate_protocols(recommender, "valid", tuple(prefixes),
                                                  shard=(workers.rank, workers.world))
            for protocol, shard in shards.items():
                prefix = prefixes[protocol]
                names = sorted({*(k for k in shard if "@10" in k), config.select_metric})
                metrics = workers.mean_of_shards(shard, names)
                row.update({f"{prefix}{k}": v for k, v in metrics.items() if "@10" in k})
                if protocol == config.select_protocol:
                    selected = metrics[config.select_metric]
            score = workers.decide(selected)
            if score > best_score:
                best_score, best_epoch, stale = score, epoch, 0
                best_state = _state(model)
            else:
                stale += 1
                # lower the learning rate on a plateau
                if config.plateau_decay < 1.0 and stale % wait == 0:
                    for group in runner.optimizer.param_groups:
                        group["lr"] *= config.plateau_decay
        row["seconds"] = clock() - started
        history.append(row)
        slowest_epoch = max(slowest_epoch, clock() - epoch_start)
        if workers.main:
            log.info("train epoch=%d loss=%.4f valid sampled hr@10=%.4f ndcg@10=%.4f, full "
                     "hr@10=%.4f ndcg@10=%.4f t=%.0fs", epoch, row["loss"],
                     row.get("valid_hr@10", math.nan), row.get("valid_ndcg@10", math.nan),
                     row.get("valid_full_hr@10", math.nan),
                     row.get("valid_full_ndcg@10", math.nan), row["seconds"])
        if stale >= config.patience * wait:
            log.info("train: early stop at epoch %d (best %d)", epoch, best_epoch)
            break
    workers.check_in_sync(model)
    if best_epoch == 0:  # never evaluated: keep the last weights
        best_state, best_epoch = _state(model), len(history)
    meta = {"best_epoch": best_epoch, "train_seconds": clock() - started,
            "epoch_seconds": train_seconds / max(len(history), 1),
            "device": dev.type, "loss": loss,
            "select_metric": f"{config.select_protocol} {config.select_metric}",
            "best_valid": best_score if math.isfinite(best_score) else None,
            "processes": workers.world, "lr_factor": workers.lr_factor,
            "patience_evaluations": config.patience * wait}
    return Checkpoint(config, split.vocab, best_state, history, meta)


def refit(split: LeaveOneOutSplit, selected: Checkpoint, *, time_budget_s: float | None = None,
          device: str | torch.device | None = None, progress: bool = False,
          clock: Clock = time.monotonic, workers: Workers = SINGLE) -> Checkpoint:
    """Retrain from scratch on training + validation items with the hyperparameters and the
    epoch count selected on validation (``selected.meta["best_epoch"]``), for the test
    stage. The test items are never used; the validation metrics of this model mean
    nothing (it has seen the validation items), report those of ``selected``."""
    config = selected.config
    dev = pick_device(device)
    started = clock()
    torch.manual_seed(config.seed)
    model = SASRec(split.n_items, config).to(dev)
    data = training_data(split.training_sequences("test"), config.max_len)
    runner = _EpochRunner(model, data, config, dev, progress, workers)
    epochs = int(selected.meta["best_epoch"])
    history: list[dict[str, float]] = []
    slowest_epoch = 0.0
    for epoch in range(1, epochs + 1):
        over = time_budget_s is not None and clock() - started + slowest_epoch > time_budget_s
        if workers.decide(float(over)):
            log.warning("refit: stopping after %d of %d epochs, time budget %.0fs",
                        epoch - 1, epochs, time_budget_s)
            break
        epoch_start = clock()
        history.append({"epoch": float(epoch), "loss": runner.run(epoch),
                        "seconds": clock() - started})
        slowest_epoch = max(slowest_epoch, clock() - epoch_start)
        if workers.main:
            log.info("refit epoch=%d/%d loss=%.4f t=%.0fs", epoch, epochs,
                     history[-1]["loss"], history[-1]["seconds"])
    workers.check_in_sync(model)
    meta = {**selected.meta, "refit": True, "refit_epochs": len(history),
            "refit_seconds": clock() - started, "refit_history": history}
    return Checkpoint(config, split.vocab, _state(model), selected.history, meta)


def write_report(directory: str | Path, checkpoint: Checkpoint,
                 results: dict[str, dict[str, dict[str, float]]],
                 extra: dict[str, Any] | None = None) -> Path:
    """Write ``DIR/metrics.json`` (valid/test x sampled/full metrics, train seconds, device,
    hyperparameters, per-epoch history) and ``DIR/learning_curves.png`` when matplotlib is
    installed. Returns the JSON path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        **results,
        "train_seconds": checkpoint.meta.get("train_seconds"),
        "device": checkpoint.meta.get("device"),
        "best_epoch": checkpoint.meta.get("best_epoch"),
        "select_metric": checkpoint.meta.get("select_metric"),
        "hyperparameters": checkpoint.config.to_dict(),
        "history": checkpoint.history,
        **(extra or {}),
    }
    path = out / "metrics.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot_learning_curves(checkpoint.history, out / "learning_curves.png")
    return path


def plot_learning_curves(history: Sequence[dict[str, float]], path: Path) -> bool:
    """Training loss, and validation HR@10 / NDCG@10 per epoch under both protocols;
    False without matplotlib."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional dependency

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        log.warning("matplotlib not installed: no learning-curve plot at %s", path)
        return False
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_sampled, ax_full) = plt.subplots(1, 3, figsize=(15, 4))
    ax_loss.plot(epochs, [row["loss"] for row in history], marker=".")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    for ax, prefix, title in ((ax_sampled, "valid_", "validation, sampled (100 negatives)"),
                              (ax_full, "valid_full_", "validation, full ranking")):
        for metric in ("hr@10", "ndcg@10"):
            points = [(row["epoch"], row[prefix + metric]) for row in history
                      if prefix + metric in row]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=metric)
        ax.set(xlabel="epoch", ylabel=title.split(",")[0], title=title)
        ax.legend()
    if history and "seconds" in history[-1]:
        ax_loss.set_title(f"loss ({len(history)} epochs in {history[-1]['seconds']:.0f} s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
