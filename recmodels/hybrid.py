"""The offline hybrid: a sequence model's next-item distribution sharpened by the counts of
what followed the user's last items.

For a history, a sequence model's next-item distribution ``p(j)`` (softmax of its scores),
and the forward co-occurrence counts out of the history's last ``depth`` items (item ``j``
counted ``1 / lag`` when it came ``lag <= window`` steps after one of them, the k-th last
item's row weighted ``decay ** (k - 1)``), ``c_j`` with total ``n``, the hybrid scores

    log p(j) + weight * log((c_j + strength * p(j)) / (n + strength))

The second term is the counts smoothed towards the sequence model (a Dirichlet prior): rows
seen often follow their counts, rare or unseen rows the sequence model. ``weight`` 0 is the
sequence model alone. ``strength`` and ``weight`` are chosen on the validation split only
(:func:`select`); the test split is never looked at. ``window``, ``depth`` and ``decay``
are fixed (:data:`WINDOW`, :data:`DEPTH`, :data:`DECAY`, chosen on Toys' validation split
and checked on Sports and Games, docs/quality.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from recmodels.baselines import MarkovRecommender
from recmodels.interface import Recommender, as_float_tensor

WINDOW = 3  # steps after an item whose items count as following it
DEPTH = 3  # last items of the history whose rows are read
DECAY = 0.5  # weight of the k-th last item's row: DECAY ** (k - 1)
STRENGTHS: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)
WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)
_FLOOR = 1e-12  # keeps log() finite where both the counts and p are 0 (padding)


class CountRows(Protocol):
    """What the hybrid reads of the counts (:meth:`MarkovRecommender.rows`)."""

    @property
    def n_items(self) -> int: ...

    def rows(self, histories: Sequence[Sequence[int]], depth: int = 1,
             decay: float = 0.5) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class Hybrid:
    """A :class:`Recommender`: ``sequence``'s log-probabilities plus ``weight`` times the
    log of the co-occurrence counts (``counts``, fit with ``window``) smoothed towards
    them."""

    counts: CountRows
    sequence: Recommender
    strength: float
    weight: float
    depth: int = DEPTH
    decay: float = DECAY

    @property
    def n_items(self) -> int:
        return self.counts.n_items

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        logits = as_float_tensor(self.sequence.score(histories)).clone()
        logits[:, 0] = float("-inf")  # padding
        log_p = torch.log_softmax(logits, dim=1)
        if self.weight == 0.0:
            return log_p
        dense, row_totals = self.counts.rows(histories, self.depth, self.decay)
        counts, totals = torch.from_numpy(dense), torch.from_numpy(row_totals)
        smoothed = (counts + self.strength * log_p.exp()) / (totals + self.strength)[:, None]
        return log_p + self.weight * torch.log(smoothed + _FLOOR)


class CachedScores:
    """A :class:`Recommender` that scores each batch of histories once: ``model``'s
    scores are kept by the batch's content, for a selection that scores the same
    histories many times (they are not to be changed in place)."""

    def __init__(self, model: Recommender) -> None:
        self.model = model
        self._scores: dict[tuple[tuple[int, ...], ...], torch.Tensor] = {}

    @property
    def n_items(self) -> int:
        return self.model.n_items

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        key = tuple(tuple(history) for history in histories)
        if key not in self._scores:
            self._scores[key] = as_float_tensor(self.model.score(histories))
        return self._scores[key]


class CachedRows:
    """:class:`CountRows` that reads each batch of histories once (see
    :class:`CachedScores`)."""

    def __init__(self, counts: CountRows) -> None:
        self.counts = counts
        self._rows: dict[tuple[object, ...], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def n_items(self) -> int:
        return self.counts.n_items

    def rows(self, histories: Sequence[Sequence[int]], depth: int = 1,
             decay: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        key = (tuple(tuple(history) for history in histories), depth, decay)
        if key not in self._rows:
            self._rows[key] = self.counts.rows(histories, depth, decay)
        return self._rows[key]


@dataclass(frozen=True)
class Selection:
    strength: float
    weight: float
    valid: dict[tuple[float, float], float]  # (strength, weight) -> the validation metric


def select(counts: MarkovRecommender, sequence: Recommender,
           validate: Callable[[Recommender], float],
           strengths: Sequence[float] = STRENGTHS,
           weights: Sequence[float] = WEIGHTS) -> Selection:
    """The (strength, weight) with the best ``validate`` score (validation split only).
    Ties go to the smaller weight, then the smaller strength: nearer the sequence model."""
    once = CachedScores(sequence)  # every pair scores the same histories
    rows = CachedRows(counts)  # and reads the same rows
    scores: dict[tuple[float, float], float] = {}
    for strength, weight in itertools.product(strengths, weights):
        if weight == 0.0 and strength != strengths[0]:
            continue  # weight 0 is the sequence model whatever the strength
        scores[(strength, weight)] = validate(Hybrid(rows, once, strength, weight))
    best = max(scores, key=lambda sw: (scores[sw], -sw[1], -sw[0]))
    return Selection(best[0], best[1], scores)
