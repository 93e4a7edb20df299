"""Fitting the serving blend: a grid search over (markov, sequence, trending) weights that
maximises NDCG@10 of the lists serving would publish, on score matrices (pure numpy).

The matrices (built by :mod:`recmodels.blend_holdout` with serving's own functions) hold,
per holdout user, every item serving could list: the candidates of each source with the
source's normalised score, and the popular items that fill short lists. For one weight
triple the list is ranked exactly as :func:`recmodels.scoring.ranking.blend` + ``top_n`` rank it:
items proposed by a source with a weight > 0 by their weighted sum (ties by item index),
then the popular fill in popularity order; a target nowhere in the list is a miss. The
log-linear blend is a weighted sum too, of its terms (log-probability, smoothed Markov
log-count, trending) for one strength; its scores may be negative or -inf.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Weights = tuple[float, float, float]  # markov, sequence, trending
SOURCES = ("markov", "sequence", "trending")
SINGLE_SOURCES: dict[str, Weights] = {  # the fixed weights of each single source
    "markov": (1.0, 0.0, 0.0), "sequence": (0.0, 1.0, 0.0), "trending": (0.0, 0.0, 1.0),
    "popularity": (0.0, 0.0, 0.0)}


@dataclass(frozen=True)
class CandidateScores:
    """Holdout users' candidates as padded ``[users, columns]`` rows.

    ``items``: item index, -1 for padding; ``scores[s]`` / ``proposed[s]``: source ``s``
    (markov, sequence, trending)'s normalised score (0 where it did not propose the item;
    log-linear: its term, for every item) and whether it proposed it; ``fill``: the item's
    position in the popular fill, -1 when it is not a fill item; ``targets``: each user's
    next item; ``n_users``: users evaluated, also those left out of the rows because their
    target was no candidate at all (misses
    whatever the weights).
    """

    items: np.ndarray  # [U, C] int64
    scores: np.ndarray  # [3, U, C] float64
    proposed: np.ndarray  # [3, U, C] bool
    fill: np.ndarray  # [U, C] int64
    targets: np.ndarray  # [U] int64
    n_users: int

    def __post_init__(self) -> None:
        u, c = self.items.shape
        if self.scores.shape != (3, u, c) or self.proposed.shape != (3, u, c) \
                or self.fill.shape != (u, c) or self.targets.shape != (u,):
            raise ValueError("CandidateScores: inconsistent shapes")
        if self.n_users < u:
            raise ValueError(f"CandidateScores: n_users={self.n_users} < {u} rows")


def target_ranks(c: CandidateScores, weights: Weights) -> np.ndarray:
    """0-based rank of each row's target in the served list; ``inf`` when not listed."""
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0):
        raise ValueError(f"blend weights must be >= 0, got {weights}")
    active = w > 0
    present = (c.proposed & active[:, None, None]).any(axis=0)
    with np.errstate(invalid="ignore"):  # 0 * -inf: a log-linear term with weight 0
        blended = np.tensordot(w, np.where(w[:, None, None] > 0, c.scores, 0.0), axes=1)
    # the proposed items first (tier 2) by blended score, then the popular fill (tier 1) in
    # its order; anything else is never listed (tier 0)
    tier = np.where(present, 2, np.where(c.fill >= 0, 1, 0))
    value = np.where(present, blended, -c.fill.astype(np.float64))
    is_target = c.items == c.targets[:, None]
    rows = np.arange(len(c.targets))
    at = is_target.argmax(axis=1)
    target_tier = np.where(is_target.any(axis=1), tier[rows, at], 0)
    target = value[rows, at]
    ahead = (tier > target_tier[:, None]) | ((tier == target_tier[:, None]) & (
        (value > target[:, None]) | ((value == target[:, None])
                                     & (c.items < c.targets[:, None]))))
    ranks: np.ndarray = ahead.sum(axis=1).astype(np.float64)
    ranks[target_tier == 0] = np.inf
    return ranks


def evaluate(c: CandidateScores, weights: Weights, k: int = 10) -> dict[str, float]:
    """NDCG@k and HR@k of the served lists over all ``c.n_users`` users."""
    ranks = target_ranks(c, weights)
    hit = ranks < k
    gains = np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 0.0) + 2.0), 0.0)
    n = max(c.n_users, 1)
    return {f"ndcg@{k}": float(gains.sum()) / n, f"hr@{k}": float(hit.sum()) / n}


def geometric(low_exp: float, high_exp: float, step_exp: float) -> list[float]:
    """Powers of two ``2**e`` for e from ``low_exp`` to ``high_exp`` in steps of
    ``step_exp``."""
    n = round((high_exp - low_exp) / step_exp)
    return [2.0 ** (low_exp + i * step_exp) for i in range(n + 1)]


def coarse_grid(markov: Sequence[float] = tuple(geometric(-8, 12, 2)),
                trending: Sequence[float] = tuple(geometric(-10, 2, 2))) -> list[Weights]:
    """Sequence weight 1 with every (markov, trending) pair, 0 included; then the blends
    without the sequence source (only ratios matter, so its weight is 1 or 0), and the
    four single sources."""
    grid: list[Weights] = list(SINGLE_SOURCES.values())
    grid += [(m, 1.0, t) for m in (0.0, *markov) for t in (0.0, *trending)]
    grid += [(1.0, 0.0, t) for t in trending]
    return list(dict.fromkeys(grid))


def refine_grid(best: Weights, factors: Sequence[float] = tuple(geometric(-1, 1, 0.5))
                ) -> list[Weights]:
    """Around ``best``: every weight that is neither 0 nor the reference 1 of the sequence
    source times each factor."""
    m, s, t = best
    ms = [m * f for f in factors] if m > 0 and s > 0 else [m]
    ts = [t * f for f in factors] if t > 0 and (s > 0 or m > 0) else [t]
    return list(dict.fromkeys((mm, s, tt) for mm in ms for tt in ts))


@dataclass(frozen=True)
class GridResult:
    weights: Weights
    ndcg: float
    hr: float
    evaluated: int  # weight triples tried


def search(c: CandidateScores, grid: Iterable[Weights], k: int = 10) -> GridResult:
    """The weights of ``grid`` with the best NDCG@k (then HR@k, then the first)."""
    best: GridResult | None = None
    count = 0
    for weights in grid:
        count += 1
        found = evaluate(c, weights, k)
        ndcg, hr = found[f"ndcg@{k}"], found[f"hr@{k}"]
        if best is None or (ndcg, hr) > (best.ndcg, best.hr):
            best = GridResult(weights, ndcg, hr, 0)
    if best is None:
        raise ValueError("blend search: empty grid")
    return GridResult(best.weights, best.ndcg, best.hr, count)


def fit_weights(c: CandidateScores, k: int = 10) -> GridResult:
    """Coarse grid, then a finer one around its best; the better of the two."""
    coarse = search(c, coarse_grid(), k)
    fine = search(c, refine_grid(coarse.weights), k)
    best = fine if (fine.ndcg, fine.hr) > (coarse.ndcg, coarse.hr) else coarse
    return GridResult(best.weights, best.ndcg, best.hr, coarse.evaluated + fine.evaluated)


def relative_gain(value: float, reference: float) -> float:
    """``value / reference - 1`` (inf when the reference is 0 and the value is not)."""
    if reference == 0:
        return 0.0 if value == 0 else math.inf
    return value / reference - 1.0
