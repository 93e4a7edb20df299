"""Pure scoring: Markov successors, popularity fill, exclusions, top-N. No I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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
    fill_popular(ranked, popular, exclude, n)
    return ranked


def fill_popular(ranked: list[Scored], popular: Sequence[tuple[int, float]],
                 exclude: set[int], n: int) -> None:
    """Append popular items until ``ranked`` has ``n``; they rank below every scored
    candidate: scaled into (0, floor]."""
    if len(ranked) >= n:
        return
    taken = {c.item for c in ranked}
    floor = ranked[-1].score if ranked else 1.0
    top = max((score for _, score in popular), default=0.0) or 1.0
    for item, score in popular:
        if len(ranked) >= n:
            break
        if item in exclude or item in taken:
            continue
        ranked.append(Scored(item, floor * score / top, [Reason("popular", score=score / top)]))
        taken.add(item)


Normalisation = Literal["max", "probability", "rank", "loglinear"]
LINEAR_NORMALISATIONS: tuple[Normalisation, ...] = ("max", "probability", "rank")
NORMALISATIONS: tuple[Normalisation, ...] = (*LINEAR_NORMALISATIONS, "loglinear")


@dataclass(frozen=True, slots=True)
class SequenceCandidates:
    scores: dict[int, float]  # item -> dot product
    log_z: float  # log sum exp of the dot products of every item (softmax normaliser)
    dots: dict[int, float] = field(default_factory=dict)  # further items asked for
    has_vector: bool = True  # False: no model, or a user without known items


def sequence_candidates(user_vector: np.ndarray, item_vectors: np.ndarray, k: int,
                        exclude: set[int], also: Iterable[int] = ()) -> SequenceCandidates:
    """Top ``k`` items by dot product with the user vector (exact), excluded items masked,
    the log of the softmax normaliser over the whole catalogue (before masking), and the
    dot products of the items of ``also`` the model knows (excluded or not)."""
    if not len(item_vectors) or not np.any(user_vector):
        return SequenceCandidates({}, 0.0, has_vector=False)
    scores = item_vectors @ user_vector
    top_score = float(scores.max())
    log_z = top_score + math.log(float(np.exp(scores - top_score).sum()))
    dots = {i: float(scores[i]) for i in also if 0 <= i < len(scores)}
    banned = [i for i in exclude if i < len(scores)]
    if banned:
        scores[banned] = -np.inf
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.isfinite(scores[top])]
    return SequenceCandidates(dict(zip(top.tolist(), scores[top].tolist(), strict=True)), log_z,
                              dots)


@dataclass(frozen=True, slots=True)
class BlendWeights:
    """Weights of the normalised source scores, and how each source is normalised:

    * ``max``: each source's best candidate at 1 (Markov p / max p, sequence
      exp(s - max s), trending t / max t);
    * ``probability``: next-item probabilities (Markov: the smoothed P(j | recent items)
      as scored; sequence: SASRec's softmax over the whole catalogue, exp(s - log Z);
      trending t / max t, the same list for every user, so its scale is the weight's);
    * ``rank``: 1 / (1 + rank) within each source (rank 0 = its best candidate);
    * ``loglinear``: not a sum of normalised scores but, for every candidate ``j``,
      ``sequence * log p(j) + markov * log((c_j + strength * p(j)) / (n + strength))
      + trending * t_j / max t``: SASRec's log-probability sharpened by the Markov counts
      smoothed towards it (:func:`loglinear_terms`), published as
      :func:`loglinear_published`.
    """

    markov: float = 1.0
    sequence: float = 1.0
    trending: float = 0.1
    normalisation: Normalisation = "max"
    strength: float = 1.0  # loglinear: weight of the sequence prior in the smoothed counts

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"blend normalisation: expected one of {NORMALISATIONS}, got "
                             f"{self.normalisation!r}")
        if min(self.markov, self.sequence, self.trending) < 0:
            raise ValueError("blend weights must be >= 0")
        if not self.strength > 0:
            raise ValueError(f"blend strength must be > 0, got {self.strength}")

    @property
    def needs_sequence(self) -> bool:
        """Whether the lists need the model's scores: a sequence weight, or the log-linear
        Markov term (its counts are smoothed towards the model)."""
        return self.sequence > 0 or (self.normalisation == "loglinear" and self.markov > 0)

    def to_meta(self, **extra: Any) -> dict[str, Any]:
        """The ``blend`` entry of a model version's metadata: weights, normalisation and
        ``extra`` (what the fit found on the holdout)."""
        return {"markov": self.markov, "sequence": self.sequence, "trending": self.trending,
                "normalisation": self.normalisation, "strength": self.strength, **extra}

    @classmethod
    def from_meta(cls, raw: Any) -> BlendWeights | None:
        """The fitted blend of a version's metadata; None when it has none."""
        if raw is None:
            return None
        return cls(float(raw["markov"]), float(raw["sequence"]), float(raw["trending"]),
                   raw["normalisation"], float(raw.get("strength", 1.0)))


@dataclass(frozen=True, slots=True)
class MarkovCounts:
    """The counts out of a user's recent items: the k-th most recent row weighted
    ``decay ** k`` (k from 0), summed per successor, and the rows' weighted total."""

    counts: dict[int, float]
    total: float


def markov_counts(rows: Sequence[MarkovRow], decay: float) -> MarkovCounts:
    counts: dict[int, float] = {}
    total = 0.0
    for k, row in enumerate(rows):
        weight = decay**k
        total += weight * row.total
        for succ, count in row.successors:
            counts[succ] = counts.get(succ, 0.0) + weight * count
    return MarkovCounts(counts, total)


def log_probability(item: int, sequence: SequenceCandidates, n_items: int) -> float:
    """The model's softmax log-probability of ``item``: ``-log n_items`` (uniform) for a
    user without a vector or an item the model does not know yet."""
    dot = sequence.scores.get(item)
    if dot is None:
        dot = sequence.dots.get(item)
    if not sequence.has_vector or dot is None:
        return -math.log(max(n_items, 1))
    return dot - sequence.log_z


def loglinear_terms(item: int, counts: MarkovCounts, sequence: SequenceCandidates,
                    n_items: int, strength: float) -> tuple[float, float]:
    """``(log p(item), log((c + strength * p) / (n + strength)))``: the model's
    log-probability (:func:`log_probability`) and the Markov counts smoothed towards it."""
    log_p = log_probability(item, sequence, n_items)
    return log_p, float(smoothed_log_counts(counts.counts.get(item, 0.0), log_p, counts.total,
                                            strength))


def smoothed_log_counts(counts: Any, log_p: Any, total: Any, strength: float) -> Any:
    """``log((counts + strength * exp(log_p)) / (total + strength))``, elementwise over
    numbers or arrays; -inf where both the counts and the probability are 0."""
    with np.errstate(divide="ignore"):
        return np.log((counts + strength * np.exp(log_p)) / (total + strength))


@dataclass(frozen=True, slots=True)
class SourceScores:
    """Each source's candidates with their normalised scores (item -> score >= 0)."""

    markov: dict[int, float]
    sequence: dict[int, float]
    trending: dict[int, float]


def _reciprocal_ranks(scores: dict[int, float]) -> dict[int, float]:
    order = sorted(scores, key=lambda item: (-scores[item], item))
    return {item: 1.0 / (1 + rank) for rank, item in enumerate(order)}


def normalise_sources(markov: dict[int, Scored], sequence: SequenceCandidates,
                      trending: Sequence[tuple[int, float]],
                      how: Normalisation) -> SourceScores:
    """Per-source normalised scores (see :class:`BlendWeights` for the three ways)."""
    raw_markov = {item: cand.score for item, cand in markov.items()}
    trend = dict(trending)
    top_t = max(trend.values(), default=0.0) or 1.0
    trend = {item: score / top_t for item, score in trend.items()}
    if how == "rank":
        return SourceScores(_reciprocal_ranks(raw_markov), _reciprocal_ranks(sequence.scores),
                            _reciprocal_ranks(trend))
    seq = sequence.scores
    if how == "probability":
        return SourceScores(raw_markov, {i: math.exp(s - sequence.log_z) for i, s in seq.items()},
                            trend)
    top = max(raw_markov.values(), default=0.0) or 1.0
    best = max(seq.values(), default=0.0)
    return SourceScores({i: p / top for i, p in raw_markov.items()},
                        {i: math.exp(s - best) for i, s in seq.items()}, trend)


def blend(markov: dict[int, Scored], sequence: dict[int, float] | SequenceCandidates,
          trending: Sequence[tuple[int, float]], weights: BlendWeights,
          counts: MarkovCounts | None = None, n_items: int = 0) -> dict[int, Scored]:
    """Weighted sum of per-source normalised scores (:func:`normalise_sources`); a source
    with weight 0 proposes nothing. Every source that proposed an item stays in its
    reasons. ``loglinear`` scores the proposed items by :func:`loglinear_terms` instead,
    from ``counts`` (:func:`markov_counts` of the rows ``markov`` was scored from) and
    ``sequence``'s dot products (its ``dots`` hold those of the other proposed items)."""
    if not isinstance(sequence, SequenceCandidates):  # log Z unknown: over the candidates
        top = max(sequence.values(), default=0.0)
        log_z = top + math.log(sum(math.exp(s - top) for s in sequence.values()) or 1.0)
        sequence = SequenceCandidates(sequence, log_z)
    out: dict[int, Scored] = {}

    def add(item: int, value: float, reason: Reason) -> None:
        cand = out.get(item)
        if cand is None:
            cand = out[item] = Scored(item, 0.0)
        cand.score += value
        cand.reasons.append(reason)

    if weights.normalisation == "loglinear":
        if counts is None:
            raise ValueError("loglinear blend: the Markov counts are needed")
        _blend_loglinear(out, markov, sequence, trending, weights, counts, n_items)
        return out
    norm = normalise_sources(markov, sequence, trending, weights.normalisation)
    if weights.markov > 0:
        for item, value in norm.markov.items():
            add(item, weights.markov * value, markov[item].reasons[0])
    if weights.sequence > 0:
        for item, value in norm.sequence.items():
            add(item, weights.sequence * value, Reason("sequence", score=sequence.scores[item]))
    if weights.trending > 0:
        top_t = max((score for _, score in trending), default=0.0) or 1.0
        for item, score in trending:
            add(item, weights.trending * norm.trending[item],
                Reason("trending", score=score / top_t))
    for cand in out.values():
        cand.reasons.sort(key=lambda r: REASON_ORDER[r.kind])
    return out


def _blend_loglinear(out: dict[int, Scored], markov: dict[int, Scored],
                     sequence: SequenceCandidates, trending: Sequence[tuple[int, float]],
                     weights: BlendWeights, counts: MarkovCounts, n_items: int) -> None:
    """Into ``out``: the items proposed by each source with a weight, scored log-linearly
    (see :class:`BlendWeights`)."""
    top_t = max((score for _, score in trending), default=0.0) or 1.0
    trend = {item: score / top_t for item, score in trending}
    if weights.markov > 0:
        for item, cand in markov.items():
            out.setdefault(item, Scored(item, 0.0)).reasons.append(cand.reasons[0])
    if weights.sequence > 0:
        for item, dot in sequence.scores.items():
            out.setdefault(item, Scored(item, 0.0)).reasons.append(Reason("sequence", score=dot))
    if weights.trending > 0:
        for item, t in trend.items():
            out.setdefault(item, Scored(item, 0.0)).reasons.append(Reason("trending", score=t))
    for item, cand in out.items():
        log_p, counted = loglinear_terms(item, counts, sequence, n_items, weights.strength)
        cand.score = weights.trending * trend.get(item, 0.0)
        if weights.sequence > 0:
            cand.score += weights.sequence * log_p
        if weights.markov > 0:
            cand.score += weights.markov * counted
        cand.reasons.sort(key=lambda r: REASON_ORDER[r.kind])
    best = max((cand.score for cand in out.values() if math.isfinite(cand.score)),
               default=0.0)
    for cand in out.values():
        cand.score = float(loglinear_published(cand.score, best))


def loglinear_published(score: Any, best: Any) -> Any:
    """The published score of a log-linear candidate: ``1 / (1 + best - score)`` (``best``:
    the user's best finite score), in (0, 1] and in the same order as the log scores, so
    that the popular fill and diversification, which expect positive scores, work
    unchanged; 0 for -inf. Elementwise over numbers or arrays."""
    finite = np.isfinite(score)
    with np.errstate(invalid="ignore"):
        return np.where(finite, 1.0 / (1.0 + (best - np.where(finite, score, best))), 0.0)


REASON_ORDER = {"markov": 0, "sequence": 1, "trending": 2, "popular": 3}
