"""Pure scoring: Markov successors, popularity fill, exclusions, top-N. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


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
