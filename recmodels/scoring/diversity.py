"""Maximal marginal relevance over item embeddings (pure)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from recmodels.scoring.ranking import Scored


def mmr(ranked: Sequence[Scored], item_vectors: np.ndarray, lam: float, n: int) -> list[Scored]:
    """Pick ``n`` of ``ranked`` greedily by lam * relevance - (1 - lam) * max cosine
    similarity to the items already picked (relevance = score / best score). Items without
    a vector (newer than the model) count as dissimilar to everything. Scores are then
    capped to be non-increasing, so the list still reads best first."""
    if lam >= 1.0 or len(ranked) <= 1:
        return list(ranked[:n])
    top = max(s.score for s in ranked) or 1.0
    relevance = np.array([s.score / top for s in ranked])
    dim = item_vectors.shape[1] if item_vectors.ndim == 2 else 0
    vectors = np.zeros((len(ranked), max(dim, 1)), dtype=np.float32)
    for row, s in enumerate(ranked):
        if s.item < len(item_vectors):
            vectors[row] = item_vectors[s.item]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    similarity = unit @ unit.T
    chosen: list[int] = []
    closest = np.full(len(ranked), -np.inf)
    left = np.ones(len(ranked), dtype=bool)
    for _ in range(min(n, len(ranked))):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        objective = np.where(left, lam * relevance - (1 - lam) * penalty, -np.inf)
        pick = int(np.argmax(objective))
        chosen.append(pick)
        left[pick] = False
        closest = np.maximum(closest, similarity[pick])
    out = [ranked[i] for i in chosen]
    for prev, cur in itertools.pairwise(out):
        cur.score = min(cur.score, prev.score)
    return out
