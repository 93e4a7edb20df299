"""Maximal marginal relevance."""

from __future__ import annotations

import numpy as np

from recmodels.scoring.diversity import mmr
from recmodels.scoring.ranking import Scored

VECTORS = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)


def _ranked() -> list[Scored]:
    return [Scored(0, 1.0), Scored(1, 0.95), Scored(2, 0.6), Scored(3, 0.5)]


def test_lambda_one_keeps_relevance_order() -> None:
    assert [s.item for s in mmr(_ranked(), VECTORS, 1.0, 3)] == [0, 1, 2]


def test_lower_lambda_skips_a_near_duplicate() -> None:
    picked = mmr(_ranked(), VECTORS, 0.5, 3)
    assert [s.item for s in picked][:2] == [0, 2]  # item 1 is nearly item 0
    scores = [s.score for s in picked]
    assert scores == sorted(scores, reverse=True)


def test_items_without_vectors_count_as_dissimilar() -> None:
    ranked = [Scored(0, 1.0), Scored(1, 0.95), Scored(9, 0.9)]
    assert [s.item for s in mmr(ranked, VECTORS, 0.5, 2)] == [0, 9]
