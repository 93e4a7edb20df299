"""Scoring a whole batch of users at once, in numpy (the serving hot path).

The same maths as the per-user reference functions of :mod:`recmodels.scoring.ranking`
(``markov_scores`` -> ``sequence_candidates`` -> ``blend`` -> ``top_n``), computed over
flat arrays keyed by ``user * span + item`` so that the cost per user is a few array
elements instead of Python objects per candidate. ``tests/unit/test_batch_scoring.py``
checks that both give the same lists. Only the final top items become :class:`Scored`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from recmodels.scoring.item_index import ItemIndex
from recmodels.scoring.ranking import (
    BlendWeights,
    Reason,
    Scored,
    fill_popular,
    loglinear_published,
    smoothed_log_counts,
)

_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float64)


@dataclass(frozen=True)
class MarkovColumns:
    """The Markov rows read for a batch of users, as columns.

    Rows (one per recent distinct item of a user, most recent first): ``row_user`` (the
    user's position in the batch), ``row_rank`` (0 = most recent), ``row_item``,
    ``row_total`` (the row's total weight). Successors: ``succ_row`` (index of its row),
    ``succ_item``, ``succ_count``.
    """

    row_user: np.ndarray
    row_rank: np.ndarray
    row_item: np.ndarray
    row_total: np.ndarray
    succ_row: np.ndarray
    succ_item: np.ndarray
    succ_count: np.ndarray

    @classmethod
    def empty(cls) -> MarkovColumns:
        return cls(_EMPTY_I, _EMPTY_I, _EMPTY_I, _EMPTY_F, _EMPTY_I, _EMPTY_I, _EMPTY_F)


@dataclass(frozen=True)
class BatchInputs:
    n_users: int
    n_items: int
    markov: MarkovColumns
    exclude: Sequence[set[int]]  # per user: items never to recommend
    has_history: Sequence[bool]  # per user: trending is blended only after a first event
    trending: Sequence[tuple[int, float]]
    popular: Sequence[tuple[int, float]]
    user_vectors: Sequence[np.ndarray | None] | None = None  # per user, when a model is used
    item_vectors: np.ndarray | None = None
    sequence_k: int = 100
    item_index: ItemIndex | None = None  # an approximate one is searched user by user


@dataclass(frozen=True)
class _Source:
    keys: np.ndarray  # sorted, unique: user * span + item
    normalised: np.ndarray
    raw: np.ndarray  # what the reason shows
    # the sequence source: per user, the softmax normaliser (nan: none)
    log_z: np.ndarray = field(default_factory=lambda: _EMPTY_F)


def _segment_max(values: np.ndarray, users: np.ndarray, n_users: int) -> np.ndarray:
    out = np.full(n_users, -np.inf)
    np.maximum.at(out, users, values)
    return out


def _reciprocal_ranks(keys: np.ndarray, scores: np.ndarray, span: int) -> np.ndarray:
    """1 / (1 + rank) within each user, rank by (-score, item); ``keys`` sorted."""
    users = keys // span
    order = np.lexsort((-scores, users))  # keys are sorted, so ties stay by item (stable)
    sorted_users = users[order]
    starts = np.searchsorted(sorted_users, sorted_users, side="left")
    ranks = np.empty(len(keys), dtype=np.float64)
    ranks[order] = np.arange(len(keys)) - starts
    return 1.0 / (1.0 + ranks)


def _markov(inp: BatchInputs, alpha: float, decay: float, span: int,
            how: str) -> tuple[_Source, np.ndarray, np.ndarray]:
    """Markov source: normalised scores, and per key the reason's (after, p)."""
    m = inp.markov
    row_weight = decay ** m.row_rank.astype(np.float64)
    norm = np.bincount(m.row_user, weights=row_weight, minlength=inp.n_users)
    denom = m.row_total + alpha * inp.n_items
    keep = denom[m.succ_row] > 0
    rows = m.succ_row[keep]
    p = (m.succ_count[keep] + alpha) / denom[rows]
    contrib = row_weight[rows] * p
    users = m.row_user[rows]
    keys = users.astype(np.int64) * span + m.succ_item[keep]
    uniq, inverse = np.unique(keys, return_inverse=True)
    score = np.bincount(inverse, weights=contrib, minlength=len(uniq))
    uniq_users = uniq // span
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(norm[uniq_users] > 0, score / norm[uniq_users], score)
    # the reason: the strongest transition (the most recent row on ties)
    best = np.lexsort((m.row_rank[rows], -contrib, inverse))
    first = np.r_[True, inverse[best][1:] != inverse[best][:-1]] if len(best) else best
    chosen = best[first] if len(best) else best
    after, best_p = m.row_item[rows][chosen], p[chosen]
    if how == "rank":
        normalised = _reciprocal_ranks(uniq, score, span)
    elif how == "probability":
        normalised = score
    else:
        top = _segment_max(score, uniq_users, inp.n_users)
        top = np.where(top > 0, top, 1.0)
        normalised = score / top[uniq_users]
    return _Source(uniq, normalised, score), after, best_p


def _sequence(inp: BatchInputs, span: int, how: str) -> _Source:
    """Sequence source: the top k items by dot product with each user's vector
    (``loglinear``: normalised to log-probabilities, with each user's ``log_z``)."""
    items = inp.item_vectors
    no_users = np.full(inp.n_users, np.nan)
    if inp.user_vectors is None or items is None or not len(items):
        return _Source(_EMPTY_I, _EMPTY_F, _EMPTY_F, no_users)
    present = [(u, v) for u, v in enumerate(inp.user_vectors) if v is not None]
    if not present:
        return _Source(_EMPTY_I, _EMPTY_F, _EMPTY_F, no_users)
    matrix = np.stack([v for _, v in present]).astype(items.dtype, copy=False)
    nonzero = matrix.any(axis=1)  # a user without known items has a zero vector
    rows = np.array([u for u, _ in present], dtype=np.int64)[nonzero]
    matrix = matrix[nonzero]
    if not len(rows):
        return _Source(_EMPTY_I, _EMPTY_F, _EMPTY_F, no_users)
    if inp.item_index is not None and not inp.item_index.exact:
        return _sequence_from_index(inp, inp.item_index, rows.tolist(), span, how)
    k = min(inp.sequence_k, len(items))
    keys, raw, normalised = [], [], []
    user_log_z = no_users
    chunk = max(1, 4_000_000 // len(items))  # bounded memory for big catalogues
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        scores = _dot_items(matrix[start:start + chunk], items)  # float32, as the model
        if how in ("probability", "loglinear"):  # softmax normaliser over the catalogue
            # in the scores' float32, as recmodels.scoring.ranking computes it: every term is
            # at most 1, and the float64 copy of the whole score matrix cost ~6x as much
            top = scores.max(axis=1, keepdims=True)
            log_z = top[:, 0].astype(np.float64) + np.log(
                np.exp(scores - top).sum(axis=1).astype(np.float64))
            user_log_z[part] = log_z
        for r, u in enumerate(part.tolist()):
            banned = [i for i in inp.exclude[u] if i < len(items)]
            if banned:
                scores[r, banned] = -np.inf
        cut = len(items) - k
        best = np.argpartition(scores, cut, axis=1)[:, cut:]  # the k largest, unordered
        picked = np.take_along_axis(scores, best, axis=1).astype(np.float64)
        ok = np.isfinite(picked)
        if how == "probability":
            norm = np.exp(picked - log_z[:, None])
        elif how == "loglinear":
            norm = picked - log_z[:, None]
        else:  # max: exp(s - the user's best s)
            with np.errstate(invalid="ignore"):  # users with every item excluded: masked
                norm = np.exp(picked - np.where(ok, picked, -np.inf).max(axis=1,
                                                                          keepdims=True))
        keys.append((part[:, None] * span + best)[ok])
        raw.append(picked[ok])
        normalised.append(norm[ok])
    return _sequence_source(keys, raw, normalised, span, how, user_log_z)


def _dot_items(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``users @ items.T``, by torch's matrix product: numpy's (OpenBLAS, here) costs
    115-165 µs more per call with the catalogue transposed, which is most of it for the small
    batches of a paced worker. 5,000 x 64 float32 items, one thread: 172 -> 56 µs for 3
    users, 231 -> 102 µs for 21, 412 -> 249 µs for 63."""
    scores: np.ndarray
    if all(a.flags.writeable and a.flags.c_contiguous and a.dtype.isnative
           for a in (users, items)):  # what torch.from_numpy shares without a warning
        scores = (torch.from_numpy(users) @ torch.from_numpy(items).T).numpy()
    else:
        scores = users @ items.T
    return scores


def _sequence_source(keys: list[np.ndarray], raw: list[np.ndarray],
                     normalised: list[np.ndarray], span: int, how: str,
                     log_z: np.ndarray) -> _Source:
    """The sequence source from per-chunk parts, sorted by key (``rank``: reciprocal
    ranks of the raw dot products; else the parts' normalised scores)."""
    all_keys, all_raw, all_norm = (np.concatenate(keys), np.concatenate(raw),
                                   np.concatenate(normalised))
    order = np.argsort(all_keys, kind="stable")
    all_keys, all_raw = all_keys[order], all_raw[order]
    if how == "rank":
        return _Source(all_keys, _reciprocal_ranks(all_keys, all_raw, span), all_raw, log_z)
    return _Source(all_keys, all_norm[order], all_raw, log_z)


def _sequence_from_index(inp: BatchInputs, index: ItemIndex, rows: list[int], span: int,
                         how: str) -> _Source:
    """Big catalogues: each user's top k from the approximate index (IVF)."""
    assert inp.user_vectors is not None
    keys, raw, normalised = [], [], []
    log_z = np.full(inp.n_users, np.nan)
    for u in rows:
        hits = index.search(np.asarray(inp.user_vectors[u]), inp.sequence_k, inp.exclude[u])
        s = hits.scores.astype(np.float64)
        keys.append(u * span + hits.items)
        raw.append(s)
        log_z[u] = hits.log_z
        normalised.append(np.exp(s - hits.log_z) if how == "probability" else
                          s - hits.log_z if how == "loglinear" else
                          np.exp(s - (s.max() if len(s) else 0.0)))
    return _sequence_source(keys, raw, normalised, span, how, log_z)


def _trending(inp: BatchInputs, span: int, how: str) -> _Source:
    if not inp.trending:
        return _Source(_EMPTY_I, _EMPTY_F, _EMPTY_F)
    items = np.array([i for i, _ in inp.trending], dtype=np.int64)
    scores = np.array([s for _, s in inp.trending], dtype=np.float64)
    top_t = scores.max() if len(scores) and scores.max() != 0 else 1.0
    scaled = scores / top_t
    users = np.array([u for u in range(inp.n_users) if inp.has_history[u]], dtype=np.int64)
    keys = (users[:, None] * span + items[None, :]).ravel()
    raw = np.tile(scaled, len(users))
    order = np.argsort(keys, kind="stable")
    keys, raw = keys[order], raw[order]
    if how == "rank":
        return _Source(keys, _reciprocal_ranks(keys, raw, span), raw)
    return _Source(keys, raw, raw)


def _lookup(source: _Source, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``keys`` in the source and whether each is there."""
    if not len(source.keys):
        return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(source.keys, keys), len(source.keys) - 1)
    return at, source.keys[at] == keys


def _value_at(source: _Source, values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``values`` (one per key of ``source``) at ``keys``; 0 where the source lacks one."""
    at, there = _lookup(source, keys)
    return np.where(there, values[at], 0.0) if len(values) else np.zeros(len(keys))


def rank_batch(inp: BatchInputs, weights: BlendWeights, alpha: float, decay: float,
               size: int) -> list[list[Scored]]:
    """The best ``size`` items of each user (blend of the sources, exclusions applied,
    filled up with popular items), with their reasons; ties by item index."""
    span = max([inp.n_items, *(i for i, _ in inp.popular), *(i for i, _ in inp.trending),
                int(inp.markov.succ_item.max(initial=0)),
                len(inp.item_vectors) if inp.item_vectors is not None else 0]) + 1
    how = weights.normalisation
    markov, after, best_p = _markov(inp, alpha, decay, span, how)
    sequence = _sequence(inp, span, how) if weights.needs_sequence else \
        _Source(_EMPTY_I, _EMPTY_F, _EMPTY_F, np.full(inp.n_users, np.nan))
    trending = _trending(inp, span, how) if weights.trending > 0 else \
        _Source(_EMPTY_I, _EMPTY_F, _EMPTY_F)
    parts = [(w, s) for w, s in ((weights.markov, markov), (weights.sequence, sequence),
                                 (weights.trending, trending)) if w > 0 and len(s.keys)]
    keys: np.ndarray
    scores: np.ndarray
    if not parts:
        keys, scores = _EMPTY_I, _EMPTY_F
    elif how == "loglinear":
        keys = np.unique(np.concatenate([s.keys for _, s in parts]))
        scores = _loglinear(inp, weights, decay, span, keys, sequence, trending)
    else:
        keys, inverse = np.unique(np.concatenate([s.keys for _, s in parts]),
                                  return_inverse=True)
        scores = np.bincount(inverse, weights=np.concatenate([w * s.normalised
                                                              for w, s in parts]),
                             minlength=len(keys))
    excluded = np.array([u * span + i for u, items in enumerate(inp.exclude) for i in items],
                        dtype=np.int64)
    if len(excluded):
        keep = ~np.isin(keys, excluded)
        keys, scores = keys[keep], scores[keep]
    users, items = keys // span, keys % span
    order = np.lexsort((-scores, users))  # keys are sorted, so ties stay by item (stable)
    sorted_users = users[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_users, sorted_users, side="left")
    top = order[rank < size]
    keys, scores, users, items = keys[top], scores[top], users[top], items[top]
    reasons = _reasons(keys, markov if weights.markov > 0 else None, after, best_p,
                       sequence if weights.sequence > 0 else None,
                       trending if weights.trending > 0 else None)
    out: list[list[Scored]] = [[] for _ in range(inp.n_users)]
    for u, item, score, why in zip(users.tolist(), items.tolist(), scores.tolist(), reasons,
                                   strict=True):
        out[u].append(Scored(item, score, why))
    for u, ranked in enumerate(out):
        if len(ranked) < size:
            fill_popular(ranked, inp.popular, inp.exclude[u], size)
    return out


def _loglinear(inp: BatchInputs, weights: BlendWeights, decay: float, span: int,
               keys: np.ndarray, sequence: _Source, trending: _Source) -> np.ndarray:
    """The published log-linear scores of the candidate ``keys`` (the maths of
    :func:`recmodels.scoring.ranking.loglinear_terms` and ``loglinear_published``)."""
    m = inp.markov
    users, items = keys // span, keys % span
    row_weight = decay ** m.row_rank.astype(np.float64)
    total = np.bincount(m.row_user, weights=row_weight * m.row_total, minlength=inp.n_users)
    counted_keys, inverse = np.unique(m.row_user[m.succ_row].astype(np.int64) * span
                                      + m.succ_item, return_inverse=True)
    counted = _Source(counted_keys, np.bincount(inverse, weights=row_weight[m.succ_row]
                                                * m.succ_count, minlength=len(counted_keys)),
                      _EMPTY_F)
    counts = _value_at(counted, counted.normalised, keys)
    log_p = np.full(len(keys), -math.log(max(inp.n_items, 1)))
    at, there = _lookup(sequence, keys)
    log_p[there] = sequence.normalised[at[there]]
    log_z = sequence.log_z[users]
    n_known = len(inp.item_vectors) if inp.item_vectors is not None else 0
    missing = np.flatnonzero(~there & np.isfinite(log_z) & (items < n_known))
    if len(missing):  # proposed by another source: the dot product for this item alone
        assert inp.user_vectors is not None and inp.item_vectors is not None
        owners, row = np.unique(users[missing], return_inverse=True)
        vectors = np.stack([inp.user_vectors[u] for u in owners.tolist()])
        vectors = vectors.astype(inp.item_vectors.dtype, copy=False)
        dots = np.einsum("ij,ij->i", vectors[row], inp.item_vectors[items[missing]])
        log_p[missing] = dots.astype(np.float64) - log_z[missing]
    smoothed = smoothed_log_counts(counts, log_p, total[users], weights.strength)
    score = weights.trending * _value_at(trending, trending.raw, keys)
    if weights.sequence > 0:
        score = score + weights.sequence * log_p
    if weights.markov > 0:
        score = score + weights.markov * smoothed
    best = _segment_max(np.where(np.isfinite(score), score, -np.inf), users, inp.n_users)
    published: np.ndarray = loglinear_published(score, best[users])
    return published


def _reasons(keys: np.ndarray, markov: _Source | None, after: np.ndarray, best_p: np.ndarray,
             sequence: _Source | None, trending: _Source | None) -> list[list[Reason]]:
    out: list[list[Reason]] = [[] for _ in range(len(keys))]
    if markov is not None:
        at, there = _lookup(markov, keys)
        rows = np.flatnonzero(there)
        for row, item, p in zip(rows.tolist(), after[at[rows]].tolist(),
                                best_p[at[rows]].tolist(), strict=True):
            out[row].append(Reason("markov", after=item, p=p))
    for kind, source in (("sequence", sequence), ("trending", trending)):
        if source is not None:
            at, there = _lookup(source, keys)
            rows = np.flatnonzero(there)
            for row, score in zip(rows.tolist(), source.raw[at[rows]].tolist(), strict=True):
                out[row].append(Reason(kind, score=score))
    return out
