"""The offline hybrid: Markov counts smoothed towards a sequence model's distribution."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recmodels.baselines import MarkovRecommender
from recmodels.hybrid import SmoothedMarkov, select_strength

N_ITEMS = 5


class FixedSequenceModel:
    """A sequence model that prefers items 5, 4, 3, 2, 1 whatever the history."""

    n_items = N_ITEMS

    def __init__(self) -> None:
        self.batches_scored = 0

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        self.batches_scored += 1
        row = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], dtype=np.float32)
        return np.tile(row, (len(histories), 1))


def _markov() -> MarkovRecommender:
    # from 1: to 2 three times, to 3 once; item 2 is never followed by anything
    return MarkovRecommender.fit([[1, 2], [1, 2], [1, 2], [1, 3], [4, 2]], N_ITEMS)


def _order(scores: torch.Tensor) -> list[int]:
    return [int(i) for i in torch.argsort(scores[1:], descending=True, stable=True) + 1]


def test_no_strength_follows_the_counts_and_the_model_orders_the_rest() -> None:
    hybrid = SmoothedMarkov(_markov(), FixedSequenceModel(), 0.0)
    after_one, after_two = hybrid.score([[1], [2]])
    assert _order(after_one) == [2, 3, 5, 4, 1]
    assert _order(after_two) == [5, 4, 3, 2, 1], "a row never seen: the model alone"


def test_a_large_strength_is_the_sequence_model() -> None:
    scores = SmoothedMarkov(_markov(), FixedSequenceModel(), 1e6).score([[1]])
    assert _order(scores[0]) == [5, 4, 3, 2, 1]


def test_a_middle_strength_mixes_by_how_much_the_row_has_seen() -> None:
    scores = SmoothedMarkov(_markov(), FixedSequenceModel(), 4.0).score([[1]])[0]
    prior = torch.softmax(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), dim=0)
    expected = (torch.tensor([0.0, 3.0, 1.0, 0.0, 0.0]) + 4.0 * prior) / (4.0 + 4.0)
    assert torch.allclose(scores[1:], expected)
    assert abs(float(scores[1:].sum()) - 1.0) < 1e-5, "the smoothed row is a distribution"


def test_the_strength_with_the_best_validation_score_is_chosen() -> None:
    seen: list[float] = []
    sequence = FixedSequenceModel()

    def validate(model: object) -> float:
        assert isinstance(model, SmoothedMarkov)
        seen.append(model.strength)
        model.score([[1], [2]])
        model.score([[4]])
        return {0.0: 0.1, 1.0: 0.3, 10.0: 0.3, 100.0: 0.2}[model.strength]

    chosen = select_strength(_markov(), sequence, validate,
                             strengths=(0.0, 1.0, 10.0, 100.0))
    assert seen == [0.0, 1.0, 10.0, 100.0]
    assert sequence.batches_scored == 2, "each batch of histories is scored once"
    assert chosen.strength == 1.0, "a tie goes to the smaller strength"
    assert chosen.valid[100.0] == 0.2


def test_markov_rows_are_the_counts_out_of_the_last_item() -> None:
    counts, totals = _markov().rows([[4, 1], [2], [], [9]])
    assert counts.shape == (4, N_ITEMS + 1)
    assert counts[0].tolist() == [0.0, 0.0, 3.0, 1.0, 0.0, 0.0]
    assert totals.tolist() == [4.0, 0.0, 0.0, 0.0], "no row: seen nowhere, empty, unknown"
