"""Count-based baselines: popularity and a first-order Markov chain.

Both implement :class:`recmodels.interface.Recommender`; ``fit`` is a classmethod (training),
``score`` is inference.

* Popularity scores item ``j`` by how often it occurs in the sequences it was fit on.
* Markov scores ``j`` by the raw count of transitions ``last -> j`` (``last`` = the last
  item of the history) in the sequences it was fit on. Ties -- including every item of an
  empty row or an empty history -- are broken by popularity: the score is
  ``count(last, j) + pop(j) / (max pop + 1)``, so the popularity part is always < 1 and
  never overrides a transition count.

Fit policy used by the benchmarks (it reproduces the numbers of shared/data/README.md):
popularity is fit on the training parts only; the Markov chain is fit on the sequences
the stage's histories come from -- training parts for ``valid``, training + validation
item for ``test`` -- i.e. it knows every transition it has observed by the time it
predicts, like the streaming Markov state does. No target is ever counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, overload

import numpy as np

from recmodels.split import LeaveOneOutSplit, Stage

log = logging.getLogger(__name__)

BaselineName = Literal["popularity", "markov"]


def item_counts(sequences: Sequence[Sequence[int]], n_items: int) -> np.ndarray:
    counts = np.zeros(n_items + 1, dtype=np.float64)
    flat = [item for seq in sequences for item in seq]
    if flat:
        counts += np.bincount(np.asarray(flat, dtype=np.int64), minlength=n_items + 1)
    counts[0] = 0.0
    return counts


class PopularityRecommender:
    """Same ranking for everyone: item counts in the data it was fit on."""

    def __init__(self, counts: np.ndarray) -> None:
        self._counts = np.asarray(counts, dtype=np.float32)

    @classmethod
    def fit(cls, sequences: Sequence[Sequence[int]], n_items: int) -> PopularityRecommender:
        return cls(item_counts(sequences, n_items))

    @property
    def n_items(self) -> int:
        return len(self._counts) - 1

    @property
    def counts(self) -> np.ndarray:
        return self._counts.copy()

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        return np.broadcast_to(self._counts, (len(histories), len(self._counts)))


class MarkovRecommender:
    """First-order Markov chain over raw transition counts, stored as CSR rows."""

    def __init__(self, indptr: np.ndarray, successors: np.ndarray, counts: np.ndarray,
                 popularity: np.ndarray) -> None:
        self._indptr = indptr
        self._successors = successors
        self._counts = counts.astype(np.float32)
        pop = np.asarray(popularity, dtype=np.float64)
        self._tiebreak = (pop / (pop.max() + 1.0)).astype(np.float32)

    @classmethod
    def fit(cls, sequences: Sequence[Sequence[int]], n_items: int,
            popularity: np.ndarray | None = None, window: int = 1) -> MarkovRecommender:
        """Count ``a -> b`` for consecutive items; ``popularity`` (default: item counts of
        ``sequences``) breaks ties. ``window`` > 1 also counts ``b`` up to ``window`` steps
        after ``a``, ``1 / lag`` each (forward co-occurrence; 1 is the Markov chain)."""
        if window < 1:
            raise ValueError(f"markov fit: window must be >= 1, got {window}")
        sources: list[int] = []
        targets: list[int] = []
        weights: list[float] = []
        for seq in sequences:
            for lag in range(1, min(window, len(seq) - 1) + 1):
                sources.extend(seq[:-lag])
                targets.extend(seq[lag:])
                weights.extend([1.0 / lag] * (len(seq) - lag))
        width = n_items + 1
        if sources:
            keys = np.asarray(sources, dtype=np.int64) * width + np.asarray(targets, np.int64)
            unique, inverse = np.unique(keys, return_inverse=True)
            counts = np.bincount(inverse, weights=np.asarray(weights), minlength=len(unique))
        else:
            unique = np.empty(0, dtype=np.int64)
            counts = np.empty(0, dtype=np.float64)
        rows, successors = np.divmod(unique, width)
        indptr = np.zeros(width + 1, dtype=np.int64)
        np.add.at(indptr, rows + 1, 1)
        indptr = np.cumsum(indptr)
        pop = popularity if popularity is not None else item_counts(sequences, n_items)
        log.info("markov fit window=%d pairs=%d distinct=%d", window, len(sources),
                 len(unique))
        return cls(indptr, successors, counts, pop)

    @property
    def n_items(self) -> int:
        return len(self._indptr) - 2

    def rows(self, histories: Sequence[Sequence[int]], depth: int = 1,
             decay: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """The counts out of each history's last item, dense ``[n, n_items + 1]``, and
        their totals ``[n]`` (float32; zeros for an empty history or an unknown item).
        ``depth`` > 1 adds the rows of the ``depth`` last items, the k-th last weighted
        ``decay ** (k - 1)``."""
        counts = np.zeros((len(histories), len(self._tiebreak)), dtype=np.float32)
        totals = np.zeros(len(histories), dtype=np.float32)
        for row, history in enumerate(histories):
            for k, item in enumerate(reversed(history[-depth:] if depth > 0 else [])):
                if not 0 < item <= self.n_items:
                    continue
                lo, hi = self._indptr[item], self._indptr[item + 1]
                weight = np.float32(decay ** k)
                counts[row, self._successors[lo:hi]] += weight * self._counts[lo:hi]
                totals[row] += weight * self._counts[lo:hi].sum()
        return counts, totals

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        counts, _ = self.rows(histories)
        scores: np.ndarray = counts + self._tiebreak
        return scores


@overload
def fit_baseline(name: Literal["popularity"], split: LeaveOneOutSplit,
                 stage: Stage, window: int = 1) -> PopularityRecommender: ...
@overload
def fit_baseline(name: Literal["markov"], split: LeaveOneOutSplit,
                 stage: Stage, window: int = 1) -> MarkovRecommender: ...
@overload
def fit_baseline(name: BaselineName, split: LeaveOneOutSplit,
                 stage: Stage, window: int = 1) -> PopularityRecommender | MarkovRecommender: ...
def fit_baseline(name: BaselineName, split: LeaveOneOutSplit,
                 stage: Stage, window: int = 1) -> PopularityRecommender | MarkovRecommender:
    """A baseline fit by the documented policy (see the module docstring) for ``stage``;
    ``window``: the Markov counts' (:meth:`MarkovRecommender.fit`)."""
    train_only = split.training_sequences("valid")
    popularity = item_counts(train_only, split.n_items)
    if name == "popularity":
        return PopularityRecommender(popularity)
    if name == "markov":
        return MarkovRecommender.fit(split.training_sequences(stage), split.n_items,
                                     popularity=popularity, window=window)
    raise ValueError(f"baseline: unknown model name {name!r} (popularity|markov)")
