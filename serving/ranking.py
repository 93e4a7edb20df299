"""Pure scoring: Markov successors, popularity fill, exclusions, top-N. No I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class MarkovRow:
    """Successors of ``item`` (best first, weighted counts) and the row's total weight."""

    item: int
    total: float
    successors: Sequence[tuple[int, float]]


@dataclass(frozen=True, slots=True)
class UserState:
    user_id: str
    sequence: Sequence[int]  # oldest first
    bought: frozenset[int] = frozenset()
    rows: Sequence[MarkovRow] = ()  # rows of the last distinct items, most recent first
    vector: np.ndarray | None = None  # stored user embedding
    vector_version: str | None = None  # model version that made it


@dataclass(frozen=True, slots=True)
class Reason:
    kind: str  # markov | sequence | trending | popular
    after: int | None = None
    p: float | None = None
    score: float | None = None


@dataclass(slots=True)
class Scored:
    item: int
    score: float
    reasons: list[Reason] = field(default_factory=list)


def markov_scores(rows: Sequence[MarkovRow], n_items: int, alpha: float,
                  decay: float) -> dict[int, Scored]:
    """Recency-weighted mix of smoothed P(j | i) over the user's last items.

    P(j | i) = (c_ij + alpha) / (total_i + alpha * n_items); the row of the k-th most
    recent item gets weight decay**k; scores are divided by the sum of the weights,
    so they stay in [0, 1]. Each candidate keeps the strongest transition as reason.
    """
    out: dict[int, Scored] = {}
    best: dict[int, float] = {}
    norm = 0.0
    for k, row in enumerate(rows):
        weight = decay**k
        norm += weight
        denom = row.total + alpha * n_items
        if denom <= 0:
            continue
        for succ, count in row.successors:
            p = (count + alpha) / denom
            contrib = weight * p
            cand = out.get(succ)
            if cand is None:
                cand = out[succ] = Scored(succ, 0.0)
            cand.score += contrib
            if contrib > best.get(succ, -1.0):
                best[succ] = contrib
                cand.reasons = [Reason("markov", after=row.item, p=p)]
    if norm > 0:
        for cand in out.values():
            cand.score /= norm
    return out


def exclusions(state: UserState, exclude_recent: int, exclude_purchased: bool,
               blocked: Iterable[int] = ()) -> set[int]:
    """Items never to recommend to this user: the last few seen, bought ones, blocked ones."""
    out = set(blocked)
    if exclude_recent > 0:
        out.update(state.sequence[-exclude_recent:])
    if exclude_purchased:
        out.update(state.bought)
    return out


def top_n(candidates: dict[int, Scored], popular: Sequence[tuple[int, float]],
          exclude: set[int], n: int) -> list[Scored]:
    """Best ``n`` candidates (ties by item index), filled up with popular items."""
    ranked = sorted((c for c in candidates.values() if c.item not in exclude),
                    key=lambda c: (-c.score, c.item))[:n]
    if len(ranked) < n:
        taken = {c.item for c in ranked}
        # popular items rank below every scored candidate: scaled into (0, floor]
        floor = ranked[-1].score if ranked else 1.0
        top = max((score for _, score in popular), default=0.0) or 1.0
        for item, score in popular:
            if len(ranked) >= n:
                break
            if item in exclude or item in taken:
                continue
            ranked.append(Scored(item, floor * score / top,
                                 [Reason("popular", score=score / top)]))
            taken.add(item)
    return ranked


def sequence_scores(user_vector: np.ndarray, item_vectors: np.ndarray, k: int,
                    exclude: set[int]) -> dict[int, float]:
    """Top ``k`` items by dot product with the user vector (exact), excluded items masked."""
    if not len(item_vectors) or not np.any(user_vector):
        return {}
    scores = item_vectors @ user_vector
    banned = [i for i in exclude if i < len(scores)]
    if banned:
        scores[banned] = -np.inf
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    return {int(i): float(scores[i]) for i in top if np.isfinite(scores[i])}


@dataclass(frozen=True, slots=True)
class BlendWeights:
    markov: float = 1.0
    sequence: float = 1.0
    trending: float = 0.1


def blend(markov: dict[int, Scored], sequence: dict[int, float],
          trending: Sequence[tuple[int, float]], weights: BlendWeights) -> dict[int, Scored]:
    """Weighted sum of per-source normalised scores, each in [0, 1] with the source's best
    candidate at 1: Markov p / max p, sequence exp(s - max s), trending t / max t. Every
    source that proposed an item stays in its reasons."""
    out: dict[int, Scored] = {}

    def add(item: int, value: float, reason: Reason) -> None:
        cand = out.get(item)
        if cand is None:
            cand = out[item] = Scored(item, 0.0)
        cand.score += value
        cand.reasons.append(reason)

    if markov and weights.markov > 0:
        top = max(c.score for c in markov.values()) or 1.0
        for item, cand in markov.items():
            add(item, weights.markov * cand.score / top, cand.reasons[0])
    if sequence and weights.sequence > 0:
        best = max(sequence.values())
        for item, score in sequence.items():
            add(item, weights.sequence * math.exp(score - best),
                Reason("sequence", score=score))
    if trending and weights.trending > 0:
        top_t = max(score for _, score in trending) or 1.0
        for item, score in trending:
            add(item, weights.trending * score / top_t, Reason("trending", score=score / top_t))
    for cand in out.values():
        cand.reasons.sort(key=lambda r: REASON_ORDER[r.kind])
    return out


REASON_ORDER = {"markov": 0, "sequence": 1, "trending": 2, "popular": 3}
