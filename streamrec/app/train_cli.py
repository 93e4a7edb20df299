"""Entry points behind ``streamrec train`` and ``streamrec evaluate`` (user-facing output).

Formats: ``seq`` = ``user item`` lines in time order per user (Amazon Games Video.txt);
``ml100k`` = MovieLens 100K (``ml-100k.inter`` or ``u.data``), grouped by user in time order.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import torch

from recmodels.adapters import BadRows, Layout, user_sequences
from recmodels.baselines import BaselineName, fit_baseline
from recmodels.checkpoint import Checkpoint, CheckpointError
from recmodels.evaluation import PROTOCOLS, EvalConfig, Evaluator, Metrics
from recmodels.hybrid import DECAY, DEPTH, WINDOW, Hybrid, select
from recmodels.interface import Recommender
from recmodels.parallel import join
from recmodels.sasrec import SASRecConfig
from recmodels.split import ItemVocab, LeaveOneOutSplit, Stage, leave_one_out
from recmodels.training import pick_device, refit, train, write_report
from streamrec.kernel.errors import DataError

log = logging.getLogger(__name__)

MODELS = ("popularity", "markov", "sasrec", "hybrid")
STAGES: tuple[Stage, ...] = ("valid", "test")
Results = dict[str, dict[str, Metrics]]
# users validated after each epoch (a seeded sample, the same every epoch); the final
# evaluation takes every user
VALID_USERS_PER_EPOCH = 10_000


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["max_len=50", "loss=sampled"]`` -> ``{"max_len": 50, "loss": "sampled"}``: each
    value read as JSON (numbers, booleans) or else kept as text; names checked against
    :class:`SASRecConfig`'s fields."""
    known = set(SASRecConfig().to_dict())
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--set {pair!r}: expected NAME=VALUE")
        if name not in known:
            raise ValueError(f"--set {name}: not a hyperparameter (one of: "
                             f"{', '.join(sorted(known))})")
        try:
            out[name] = json.loads(text)
        except json.JSONDecodeError:
            out[name] = text
    return out


def load_sequences(data: str | Path, fmt: str | Layout) -> dict[str, list[str]]:
    """Per-user item sequences in time order from a data file of format ``fmt`` (a
    built-in name or the layout of your own file); bad rows are reported on stderr."""
    bad = BadRows()
    sequences = user_sequences(data, fmt, bad)
    if report := bad.report(data):
        print(report, file=sys.stderr)
    if not sequences:
        raise DataError(f"{data}: no events")
    return sequences


def load_split(data: str | Path, fmt: str | Layout,
               vocab: ItemVocab | None = None) -> LeaveOneOutSplit:
    sequences = load_sequences(data, fmt)
    if vocab is not None:
        unknown = next((i for seq in sequences.values() for i in seq if i not in vocab), None)
        if unknown is not None:
            raise DataError(f"{data}: item {unknown!r} is not in the checkpoint's vocabulary")
    return leave_one_out(sequences, vocab)


def evaluate_recommender(evaluator: Evaluator, model: Recommender | None = None,
                         baseline: BaselineName | None = None,
                         item_embeddings: torch.Tensor | None = None) -> Results:
    """``{stage: {protocol: metrics}}``; a baseline is refit per stage by its fit policy."""
    results: Results = {}
    for stage in STAGES:
        current = model if baseline is None else fit_baseline(baseline, evaluator.split, stage)
        if current is None:
            raise ValueError("evaluate_recommender: give a model or a baseline name")
        results[stage] = stage_results(evaluator, current, stage, item_embeddings)
    return results


def stage_results(evaluator: Evaluator, model: Recommender, stage: Stage,
                  item_embeddings: torch.Tensor | None) -> dict[str, Metrics]:
    """``{protocol: metrics}`` of one stage, both protocols from one scoring pass."""
    found = evaluator.evaluate_protocols(model, stage, PROTOCOLS, item_embeddings)
    return dict(found.items())


def evaluate_hybrid(evaluator: Evaluator, sequence: Recommender,
                    item_embeddings: torch.Tensor | None = None,
                    selection_users: int = 5000) -> tuple[Results, dict[str, Any]]:
    """``sequence`` sharpened by co-occurrence counts (:mod:`recmodels.hybrid`), its
    strength and weight chosen by full-ranking NDCG@10 on the validation split (a seeded
    sample of ``selection_users``), then evaluated like every model; the counts are fit
    per stage by the Markov baseline's policy. Returns the results and the selection (the
    chosen pair, and the validation score of each pair tried)."""
    split = evaluator.split
    chooser = Evaluator(split, EvalConfig(ks=(10,), max_users=selection_users))
    counts = {stage: fit_baseline("markov", split, stage, window=WINDOW) for stage in STAGES}
    chosen = select(counts["valid"], sequence,
                    lambda model: chooser.evaluate(model, "valid", "full")["ndcg@10"])
    results: Results = {}
    for stage in STAGES:
        hybrid = Hybrid(counts[stage], sequence, chosen.strength, chosen.weight)
        results[stage] = stage_results(evaluator, hybrid, stage, item_embeddings)
    selection = {"strength": chosen.strength, "weight": chosen.weight,
                 "window": WINDOW, "depth": DEPTH, "decay": DECAY,
                 "selected_on": "valid full ndcg@10",
                 "selection_users": len(chooser.users),
                 "valid_ndcg@10": [{"strength": sw[0], "weight": sw[1], "ndcg@10": v}
                                   for sw, v in chosen.valid.items()]}
    return results, selection


def format_table(rows: dict[str, Results], ks: tuple[int, ...] = (10,)) -> str:
    """Plain-text table: one line per model and stage, HR/NDCG@K sampled and full."""
    head = ["model", "stage"] + [f"{proto[:4]} {m}@{k}" for proto in PROTOCOLS
                                 for k in ks for m in ("HR", "NDCG")]
    lines = ["  ".join(f"{h:>12}" for h in head)]
    for name, results in rows.items():
        for stage, by_protocol in results.items():
            cells = [name, stage] + [f"{by_protocol[proto][f'{m}@{k}']:.4f}"
                                     for proto in PROTOCOLS for k in ks
                                     for m in ("hr", "ndcg")]
            lines.append("  ".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def train_main(data: str, fmt: str | Layout, time_budget: float, out: str, *, seed: int = 42,
               device: str | None = None, overrides: dict[str, Any] | None = None,
               eval_reserve: float | None = None, threads: int | None = None,
               progress: bool = True) -> int:
    """Train SASRec with the default (validated) hyperparameters, select on validation,
    then evaluate valid and test (sampled and full) and write ``OUT/checkpoint/``,
    ``OUT/metrics.json`` and ``OUT/learning_curves.png``. ``time_budget`` (seconds) covers
    the whole run; ``eval_reserve`` of it (default min(120, 10%)) is kept for the final
    evaluation; ``threads`` sets torch's CPU threads. Under ``torchrun`` every process
    trains its share of each epoch (data-parallel) and rank 0 alone evaluates and writes.
    Returns a process exit code."""
    started = time.monotonic()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        config = replace(SASRecConfig.from_dict({**SASRecConfig().to_dict(),
                                                 **(overrides or {})}), seed=seed)
        split = load_split(data, fmt)
    except (DataError, ValueError, TypeError) as exc:
        print(f"streamrec train: {exc}", file=sys.stderr)
        return 2
    reserve = eval_reserve if eval_reserve is not None else min(120.0, 0.1 * time_budget)
    evaluator = Evaluator(split, EvalConfig(ks=(5, 10, 20)))
    workers, dev = join(pick_device(device))
    budget = time_budget - reserve - (time.monotonic() - started)
    if workers.main:
        print(f"training SASRec on {len(split.eval_users)} users, {split.n_items} items, "
              f"device={dev.type}, processes={workers.world}, budget={budget:.0f}s, "
              f"refit={config.refit}")
    selected = train(split, config, time_budget_s=budget, device=dev,
                     evaluator=Evaluator(split, EvalConfig(ks=(10,),
                                                           max_users=VALID_USERS_PER_EPOCH)),
                     reserve_for_refit=config.refit, progress=progress, workers=workers)
    final = selected
    if config.refit:
        remaining = time_budget - reserve - (time.monotonic() - started)
        final = refit(split, selected, time_budget_s=remaining, device=dev, progress=progress,
                      workers=workers)
    train_seconds = time.monotonic() - started
    workers.close()
    if not workers.main:
        leave_rank(0)
    if workers.distributed and dev.type == "cpu" and threads is None:
        torch.set_num_threads(os.cpu_count() or 1)  # torchrun gave each rank one thread
    results: Results = {}
    # validation: the selected model (it never saw a validation item); test: the final one
    stages: tuple[tuple[Stage, Checkpoint], ...] = (("valid", selected), ("test", final))
    for stage, checkpoint in stages:
        recommender = checkpoint.recommender(dev)
        embeddings = recommender.item_embeddings().cpu()
        results[stage] = stage_results(evaluator, recommender, stage, embeddings)
    out_dir = Path(out)
    final.save(out_dir / "checkpoint")
    total = time.monotonic() - started
    write_report(out_dir, final, dict(results),
                 {"train_seconds": train_seconds, "total_seconds": total, "data": str(data),
                  "format": fmt if isinstance(fmt, str) else fmt.describe(),
                  "users": len(split.users), "items": split.n_items,
                  "torch_threads": torch.get_num_threads(), "processes": workers.world})
    print(format_table({"sasrec": results}))
    print(f"selected epoch {selected.meta['best_epoch']}, train {train_seconds:.0f}s "
          f"(refit {final.meta.get('refit_seconds', 0.0):.0f}s), total {total:.0f}s -> "
          f"{out_dir / 'metrics.json'}")
    if workers.distributed:
        leave_rank(0)
    return 0


def leave_rank(code: int) -> NoReturn:
    """End a ``torchrun`` rank, everything written, without the interpreter's teardown:
    PyTorch's distributed objects can abort there ("terminate called without an active
    exception", with no Python frame left: 1 run in 12 of two ranks on 2 loaded cores),
    which torchrun reports as the whole run failing."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def evaluate_main(data: str, fmt: str | Layout, model: str, checkpoint: str | None,
                  json_out: str) -> int:
    """Evaluate one model (popularity, markov, a SASRec checkpoint, or the hybrid of a
    SASRec checkpoint and co-occurrence counts) on valid and test, sampled and full
    protocols; print a table and write the metrics as JSON."""
    if model not in MODELS:
        print(f"streamrec evaluate: model {model!r}: expected one of {', '.join(MODELS)}",
              file=sys.stderr)
        return 2
    extra: dict[str, Any] = {}
    try:
        if model in ("sasrec", "hybrid"):
            if checkpoint is None:
                raise DataError(f"model {model!r} needs --checkpoint DIR")
            loaded = Checkpoint.load(checkpoint)
            split = load_split(data, fmt, loaded.vocab)
            recommender = loaded.recommender(pick_device(None))
            embeddings = recommender.item_embeddings().cpu()
            if model == "sasrec":
                results = evaluate_recommender(Evaluator(split), recommender,
                                               item_embeddings=embeddings)
            else:
                results, extra["hybrid"] = evaluate_hybrid(Evaluator(split), recommender,
                                                           embeddings)
        else:
            split = load_split(data, fmt)
            name: BaselineName = "popularity" if model == "popularity" else "markov"
            results = evaluate_recommender(Evaluator(split), baseline=name)
    except (DataError, CheckpointError) as exc:
        print(f"streamrec evaluate: {exc}", file=sys.stderr)
        return 2
    Path(json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(json_out).write_text(json.dumps({"model": model, "data": str(data), **results,
                                          **extra}, indent=2), encoding="utf-8")
    print(format_table({model: results}))
    if "hybrid" in extra:
        print(f"hybrid strength {extra['hybrid']['strength']:g}, weight "
              f"{extra['hybrid']['weight']:g}, chosen by "
              f"{extra['hybrid']['selected_on']}")
    return 0
