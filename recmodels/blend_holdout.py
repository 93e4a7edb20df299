"""The serving blend fitted on the trainer's holdout (never on anything replayed later).

For a seeded sample of holdout users (the trainer's leave-one-out ``test`` targets: each
user's last item, the history being everything before it) this rebuilds what a serving
worker would see and scores it with serving's own functions:

* Markov rows counted from every user's whole sequence, less the user's own last
  transition (the one to predict): what serving has counted when a user's next event
  comes, the other users' latest events included; the rows of the user's last ``m``
  distinct items, the top ``markov_row_size`` successors of each (``markov_scores``);
* the model's user vector and the top-k items by dot product (``sequence_candidates``);
* trending and the popular fill from item counts of the same training sequences;
* the user's exclusions (``exclusions``) and each normalisation (``normalise_sources``),
  and the log-linear terms (``loglinear_terms``) for each of :data:`LOGLINEAR_STRENGTHS`.

Then :func:`recmodels.blend_fit.fit_weights` grid-searches the weights for each
normalisation (and strength); the best (NDCG@10 of the served list) is what the trainer publishes.
Everything is in Redis index space (model row = index + 1).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol

import numpy as np

from recmodels.blend_fit import SINGLE_SOURCES, CandidateScores, evaluate, fit_weights
from recmodels.checkpoint import Checkpoint
from recmodels.online import OnlineModel
from recmodels.scoring.ranking import (
    LINEAR_NORMALISATIONS,
    BlendWeights,
    MarkovCounts,
    MarkovRow,
    Normalisation,
    Scored,
    SequenceCandidates,
    UserState,
    exclusions,
    log_probability,
    markov_counts,
    markov_scores,
    normalise_sources,
    sequence_candidates,
    smoothed_log_counts,
)
from recmodels.split import LeaveOneOutSplit

log = logging.getLogger(__name__)

# log-linear blend: the weights of the model's prior in the smoothed Markov counts tried
LOGLINEAR_STRENGTHS: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


class ServingRules(Protocol):
    """The serving settings the holdout replays (``serving.*``; plain values)."""

    @property
    def top_n(self) -> int: ...
    @property
    def exclude_recent(self) -> int: ...
    @property
    def exclude_purchased(self) -> bool: ...
    @property
    def trending_candidates(self) -> int: ...
    @property
    def sequence_candidates(self) -> int: ...
    @property
    def markov_history(self) -> int: ...
    @property
    def markov_smoothing(self) -> float: ...
    @property
    def markov_recency_decay(self) -> float: ...


@dataclass(frozen=True)
class BlendFit:
    weights: BlendWeights
    holdout: dict[str, Any]  # what the fit found: per normalisation and per single source
    users: int

    def to_meta(self) -> dict[str, Any]:
        """The ``blend`` entry of the published version's metadata."""
        return self.weights.to_meta(users=self.users, holdout=self.holdout)


class TransitionCounts:
    """First-order transition counts of sequences (Redis index space)."""

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        self._rows: dict[int, Counter[int]] = {}
        for seq in sequences:
            for a, b in pairwise(seq):
                self._rows.setdefault(a, Counter())[b] += 1

    def row(self, item: int, size: int, uncounted: int | None = None) -> MarkovRow:
        """Like the serving read: the row total and the ``size`` biggest counts;
        ``uncounted``: a successor whose count is taken as one less."""
        counts = self._rows.get(item)
        if counts and uncounted is not None and counts.get(uncounted, 0) > 0:
            counts = counts.copy()
            counts[uncounted] -= 1
            counts = +counts  # drops the zero
        if not counts:
            return MarkovRow(item, 0.0, [])
        top = sorted(counts.items(), key=lambda kv: (-kv[1], -kv[0]))[:size]
        return MarkovRow(item, float(sum(counts.values())),
                         [(succ, float(n)) for succ, n in top])

    def rows_of(self, history: Sequence[int], m: int, size: int,
                target: int | None = None) -> list[MarkovRow]:
        """Rows of the last ``m`` distinct items of ``history``, most recent first;
        ``target``: the user's next item, whose transition from the last one is left out
        (counted by the sequences, it is not to be seen before it happens)."""
        seen: list[int] = []
        for item in reversed(history):
            if item not in seen:
                seen.append(item)
                if len(seen) == m:
                    break
        return [self.row(item, size, target if k == 0 else None) for k, item in enumerate(seen)]


def popular_items(sequences: Sequence[Sequence[int]], n: int) -> list[tuple[int, float]]:
    """The ``n`` most frequent items (ties by index), with their counts."""
    counts = Counter(item for seq in sequences for item in seq)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [(item, float(c)) for item, c in top]


@dataclass(frozen=True)
class CandidateRow:
    """One user's listable items (sorted), which source proposed each, each linear
    normalisation's scores (``[3, n]``: markov, sequence, trending), fill positions, and
    what the log-linear terms are made of: the model's log-probability, the Markov counts
    and their total."""

    items: list[int]
    proposed: np.ndarray  # [3, n] bool
    scores: dict[Normalisation, np.ndarray]  # [3, n] float64
    fill: list[int]  # position in the popular fill (excluded items skipped), -1: none
    log_p: np.ndarray  # [n] float64
    counts: np.ndarray  # [n] float64
    total: float

    def loglinear(self, strength: float) -> np.ndarray:
        """``[3, n]``: the log-linear terms for ``strength`` (trending as normalised)."""
        counted = smoothed_log_counts(self.counts, self.log_p, self.total, strength)
        return np.stack([counted, self.log_p, self.scores["max"][2]])


def candidate_row(markov: dict[int, Scored], sequence: SequenceCandidates,
                  trending: Sequence[tuple[int, float]], fill_list: Sequence[int],
                  exclude: set[int], counts: MarkovCounts, n_items: int) -> CandidateRow:
    """What serving could list for one user. As in serving, each source is normalised
    (:func:`recmodels.scoring.ranking.normalise_sources`) before the excluded items are
    dropped. ``counts`` (:func:`markov_counts` of the rows ``markov`` was scored from)
    and ``sequence``'s ``dots`` of the other items give the log-linear terms."""
    normalised = {how: normalise_sources(markov, sequence, trending, how)
                  for how in LINEAR_NORMALISATIONS}
    fills = {item: pos for pos, item in enumerate(i for i in fill_list if i not in exclude)}
    first = normalised["max"]
    items = sorted((set(first.markov) | set(first.sequence) | set(first.trending)
                    | set(fills)) - exclude)
    proposed = np.array([[i in src for i in items]
                         for src in (first.markov, first.sequence, first.trending)], dtype=bool)
    scores = {how: np.array([[src.get(i, 0.0) for i in items]
                             for src in (norm.markov, norm.sequence, norm.trending)],
                            dtype=np.float64).reshape(3, len(items))
              for how, norm in normalised.items()}
    log_p = [log_probability(i, sequence, n_items) for i in items]
    return CandidateRow(items, proposed.reshape(3, len(items)), scores,
                        [fills.get(i, -1) for i in items], np.array(log_p, dtype=np.float64),
                        np.array([counts.counts.get(i, 0.0) for i in items], dtype=np.float64),
                        counts.total)


def stack_rows(rows: Sequence[CandidateRow], targets: Sequence[int], how: Normalisation,
               n_users: int, strength: float = 1.0) -> CandidateScores:
    """Pad the rows into the matrices of one normalisation (``loglinear``: for
    ``strength``)."""
    u = len(rows)
    width = max((len(r.items) for r in rows), default=1)
    items = np.full((u, width), -1, dtype=np.int64)
    fill = np.full((u, width), -1, dtype=np.int64)
    scores = np.zeros((3, u, width), dtype=np.float64)
    proposed = np.zeros((3, u, width), dtype=bool)
    for r, row in enumerate(rows):
        n = len(row.items)
        items[r, :n] = row.items
        fill[r, :n] = row.fill
        scores[:, r, :n] = row.loglinear(strength) if how == "loglinear" else row.scores[how]
        proposed[:, r, :n] = row.proposed
    return CandidateScores(items, scores, proposed, fill,
                           np.asarray(targets, dtype=np.int64).reshape(u), n_users)


def holdout_candidates(model: OnlineModel, histories: Sequence[Sequence[int]],
                       targets: Sequence[int], counts: TransitionCounts,
                       popular: Sequence[tuple[int, float]], cfg: ServingRules,
                       row_size: int) -> dict[tuple[Normalisation, float], CandidateScores]:
    """Score matrices of every user's serving candidates, one per normalisation and
    strength (:data:`LOGLINEAR_STRENGTHS` for ``loglinear``, 1 for the others). Users whose
    target is no candidate at all are left out of the rows (misses whatever the weights)
    but counted."""
    vectors = model.user_vectors(histories)
    trending = list(popular[:cfg.trending_candidates])
    fill_list = [item for item, _ in popular[:cfg.top_n + cfg.exclude_recent]]
    rows: list[CandidateRow] = []
    kept: list[int] = []
    for history, target, vector in zip(histories, targets, vectors, strict=True):
        exclude = exclusions(UserState("holdout", list(history)), cfg.exclude_recent,
                             cfg.exclude_purchased)
        markov_rows = counts.rows_of(history, cfg.markov_history, row_size, target)
        markov = markov_scores(markov_rows, model.n_items, cfg.markov_smoothing,
                               cfg.markov_recency_decay)
        shown = trending if history else []
        sequence = sequence_candidates(vector, model.item_vectors, cfg.sequence_candidates,
                                       exclude, also=[*markov, *(i for i, _ in shown),
                                                      *fill_list])
        row = candidate_row(markov, sequence, shown, fill_list, exclude,
                            markov_counts(markov_rows, cfg.markov_recency_decay),
                            model.n_items)
        if target in row.items:
            rows.append(row)
            kept.append(target)
    log.info("blend holdout users=%d with the target among the candidates=%d",
             len(histories), len(rows))
    blends = [(how, 1.0) for how in LINEAR_NORMALISATIONS]
    blends += [("loglinear", strength) for strength in LOGLINEAR_STRENGTHS]
    return {(how, strength): stack_rows(rows, kept, how, len(histories), strength)
            for how, strength in blends}


def fit_serving_blend(split: LeaveOneOutSplit, checkpoint: Checkpoint, cfg: ServingRules,
                      row_size: int, max_users: int, seed: int = 2018) -> BlendFit:
    """Fit the blend on up to ``max_users`` holdout users (seeded sample): the best weights
    of every normalisation (and log-linear strength), and the best of those (ties: the
    first in the order of :func:`holdout_candidates`).
    ``row_size``: successors read per Markov row (``state.markov_row_size``)."""
    users = np.asarray(split.eval_users, dtype=np.int64)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    histories = [[i - 1 for i in split.history(int(u), "test")] for u in users]
    targets = [split.test[int(u)] - 1 for u in users]
    training = [[i - 1 for i in seq] for seq in split.training_sequences("test")]
    # every user's whole sequence, as serving has counted them when the next event comes;
    # each holdout user's own last transition is left out by rows_of
    counts = TransitionCounts([[*seq, split.test[u] - 1] if split.test[u] else seq
                               for u, seq in enumerate(training)])
    popular = popular_items(training, max(cfg.trending_candidates,
                                          cfg.top_n + cfg.exclude_recent))
    model = OnlineModel.from_checkpoint(checkpoint, "holdout")
    matrices = holdout_candidates(model, histories, targets, counts, popular, cfg,
                                  row_size)
    holdout: dict[str, Any] = {"sources": {
        name: evaluate(matrices[("max", 1.0)], weights)
        for name, weights in SINGLE_SOURCES.items()}}
    best: tuple[float, float, BlendWeights] | None = None
    for (how, strength), matrix in matrices.items():
        found = fit_weights(matrix)
        log.info("blend fit normalisation=%s strength=%g weights=%s ndcg@10=%.4f hr@10=%.4f",
                 how, strength, found.weights, found.ndcg, found.hr)
        if how not in holdout or (found.ndcg, found.hr) > (holdout[how]["ndcg@10"],
                                                           holdout[how]["hr@10"]):
            holdout[how] = {"weights": list(found.weights), "strength": strength,
                            "ndcg@10": found.ndcg, "hr@10": found.hr,
                            "evaluated": found.evaluated}
        if best is None or (found.ndcg, found.hr) > best[:2]:
            best = (found.ndcg, found.hr,
                    BlendWeights(*found.weights, normalisation=how, strength=strength))
    assert best is not None
    holdout["ndcg@10"], holdout["hr@10"] = best[0], best[1]
    return BlendFit(best[2], holdout, len(users))
