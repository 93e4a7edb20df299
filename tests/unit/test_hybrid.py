"""The offline hybrid: a sequence model's distribution sharpened by co-occurrence counts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from recmodels.baselines import MarkovRecommender
from recmodels.hybrid import Hybrid, select

N_ITEMS = 5


class FixedSequenceModel:
    """A sequence model that mildly prefers items 5, 4, 3, 2, 1 whatever the history."""

    n_items = N_ITEMS

    def __init__(self) -> None:
        self.batches_scored = 0

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        self.batches_scored += 1
        row = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], dtype=np.float32)
        return np.tile(row, (len(histories), 1))


def _counts(window: int = 1) -> MarkovRecommender:
    # from 1: to 2 three times, to 3 once; item 2 is never followed by anything
    return MarkovRecommender.fit([[1, 2], [1, 2], [1, 2], [1, 3], [4, 2]], N_ITEMS,
                                 window=window)


def _order(scores: torch.Tensor) -> list[int]:
    return [int(i) for i in torch.argsort(scores[1:], descending=True, stable=True) + 1]


def _log_p() -> torch.Tensor:
    return torch.log_softmax(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]), dim=0)


def test_weight_zero_is_the_sequence_model() -> None:
    scores = Hybrid(_counts(), FixedSequenceModel(), 1.0, 0.0).score([[1]])[0]
    assert torch.allclose(scores[1:], _log_p())


def test_the_counts_smoothed_towards_the_model_are_added_in_log_space() -> None:
    scores = Hybrid(_counts(), FixedSequenceModel(), 4.0, 0.5).score([[1], [2]])
    p = _log_p().exp()
    smoothed = (torch.tensor([0.0, 3.0, 1.0, 0.0, 0.0]) + 4.0 * p) / (4.0 + 4.0)
    assert torch.allclose(scores[0, 1:], _log_p() + 0.5 * torch.log(smoothed), atol=1e-5)
    assert _order(scores[0])[0] == 2, "three counts lift item 2 over the model's favourite"
    # a row never seen: (0 + s p) / (0 + s) = p, the model's order, sharper
    assert torch.allclose(scores[1, 1:], 1.5 * _log_p(), atol=1e-5)


def test_strong_rows_follow_the_counts_more_than_weak_ones() -> None:
    weak = Hybrid(_counts(), FixedSequenceModel(), 100.0, 1.0).score([[1]])[0]
    strong = Hybrid(_counts(), FixedSequenceModel(), 0.3, 1.0).score([[1]])[0]
    assert _order(weak)[0] == 5 and _order(strong)[0] == 2


def test_a_window_counts_later_items_by_one_over_the_lag() -> None:
    counts = MarkovRecommender.fit([[1, 2, 3, 4]], N_ITEMS, window=3)
    rows, totals = counts.rows([[1]])
    assert rows[0].tolist() == pytest.approx([0.0, 0.0, 1.0, 0.5, 1 / 3, 0.0])
    assert totals[0] == pytest.approx(1 + 0.5 + 1 / 3)
    with pytest.raises(ValueError, match="window"):
        MarkovRecommender.fit([[1, 2]], N_ITEMS, window=0)


def test_rows_of_the_last_items_are_added_with_decay() -> None:
    rows, totals = _counts().rows([[4, 1], [2], [], [9]], depth=2, decay=0.5)
    # last item 1 (3 x 2, 1 x 3) plus half of item 4's row (1 x 2)
    assert rows[0].tolist() == [0.0, 0.0, 3.5, 1.0, 0.0, 0.0]
    assert totals.tolist() == [4.5, 0.0, 0.0, 0.0], "no row: seen nowhere, empty, unknown"
    one, _ = _counts().rows([[4, 1]])
    assert one[0].tolist() == [0.0, 0.0, 3.0, 1.0, 0.0, 0.0], "depth 1: the last item only"


def test_the_pair_with_the_best_validation_score_is_chosen_scoring_the_model_once() -> None:
    seen: list[tuple[float, float]] = []
    sequence = FixedSequenceModel()
    table = {(1.0, 0.0): 0.1, (1.0, 0.5): 0.3, (1.0, 1.0): 0.2, (10.0, 0.5): 0.3,
             (10.0, 1.0): 0.25}

    def validate(model: object) -> float:
        assert isinstance(model, Hybrid)
        seen.append((model.strength, model.weight))
        model.score([[1], [2]])
        model.score([[4]])
        return table[(model.strength, model.weight)]

    counts = _counts()
    reads: list[int] = []
    read_rows = counts.rows

    def counting_rows(histories: Sequence[Sequence[int]], depth: int = 1,
                      decay: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        reads.append(len(histories))
        return read_rows(histories, depth, decay)

    counts.rows = counting_rows  # type: ignore[method-assign]
    chosen = select(counts, sequence, validate, strengths=(1.0, 10.0),
                    weights=(0.0, 0.5, 1.0))
    assert seen == [(1.0, 0.0), (1.0, 0.5), (1.0, 1.0), (10.0, 0.5), (10.0, 1.0)], \
        "weight 0 is tried once: the strength does not matter there"
    assert (chosen.strength, chosen.weight) == (1.0, 0.5), "a tie goes to the smaller strength"
    assert chosen.valid[(10.0, 1.0)] == 0.25
    assert sequence.batches_scored == 2, "each batch of histories is scored once"
    assert reads == [2, 1], "and its rows are read once"
