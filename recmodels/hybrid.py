"""The offline hybrid: Markov transition counts smoothed towards a sequence model.

For a history ending in item ``i`` with ``n_i`` counted transitions out of ``i``, ``c_ij``
of them to ``j``, and a sequence model's next-item distribution ``p(j)`` (softmax of its
scores), the hybrid scores

    (c_ij + strength * p(j)) / (n_i + strength)

a Dirichlet prior: rows seen often follow their counts, rare or unseen rows follow the
sequence model. ``strength`` 0 is Markov with the sequence model breaking its ties; a very
large one is the sequence model alone. It is chosen on the validation split only
(:func:`select_strength`); the test split is never looked at.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from recmodels.baselines import MarkovRecommender
from recmodels.interface import Recommender, as_float_tensor

# 0 and every power of sqrt(10) from 0.1 to 10^4: wide enough for rows of a few counts
# (sparse catalogues) and of thousands (dense ones)
STRENGTHS: tuple[float, ...] = (0.0, *(float(10 ** (e / 2)) for e in range(-2, 9)))


@dataclass
class SmoothedMarkov:
    """A :class:`Recommender`: Markov counts with ``sequence``'s distribution as prior."""

    markov: MarkovRecommender
    sequence: Recommender
    strength: float

    @property
    def n_items(self) -> int:
        return self.markov.n_items

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        logits = as_float_tensor(self.sequence.score(histories)).clone()
        logits[:, 0] = float("-inf")  # padding
        prior = torch.softmax(logits, dim=1)
        dense, row_totals = self.markov.rows(histories)
        counts, totals = torch.from_numpy(dense), torch.from_numpy(row_totals)
        if self.strength == 0.0:  # counts first, the prior only orders their ties
            return counts + prior * 1e-3
        return (counts + self.strength * prior) / (totals + self.strength)[:, None]


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


@dataclass(frozen=True)
class Selection:
    strength: float
    valid: dict[float, float]  # strength -> the validation metric


def select_strength(markov: MarkovRecommender, sequence: Recommender,
                    validate: Callable[[Recommender], float],
                    strengths: Sequence[float] = STRENGTHS) -> Selection:
    """The strength with the best ``validate`` score (validation split only; ties go to
    the smaller strength, the one nearer to counting)."""
    once = CachedScores(sequence)  # every strength scores the same histories
    scores = {s: validate(SmoothedMarkov(markov, once, s)) for s in strengths}
    best = max(scores, key=lambda s: (scores[s], -s))
    return Selection(best, scores)

