"""The batch scorer gives the lists of the per-user reference functions of
recmodels.scoring.ranking."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from recmodels.scoring.batch_scoring import BatchInputs, MarkovColumns, rank_batch
from recmodels.scoring.item_index import IndexConfig, ItemIndex
from recmodels.scoring.ranking import (
    BlendWeights,
    MarkovRow,
    Scored,
    SequenceCandidates,
    blend,
    markov_counts,
    markov_scores,
    sequence_candidates,
    top_n,
)

ALPHA, DECAY = 0.1, 0.5


def _random_batch(rng: random.Random, n_users: int, n_items: int
                  ) -> tuple[list[list[MarkovRow]], list[set[int]], list[bool]]:
    rows_of, exclude, history = [], [], []
    for _ in range(n_users):
        rows = []
        for _ in range(rng.randint(0, 3)):
            successors = rng.sample(range(n_items), rng.randint(0, 12))
            counts = [(s, rng.uniform(0.5, 9.0)) for s in successors]
            counts.sort(key=lambda sc: -sc[1])
            total = sum(c for _, c in counts) + rng.uniform(0, 3)
            rows.append(MarkovRow(rng.randrange(n_items), total, counts))
        rows_of.append(rows)
        exclude.append(set(rng.sample(range(n_items), rng.randint(0, 4))))
        history.append(bool(rows) or rng.random() < 0.5)
    return rows_of, exclude, history


def _columns(rows_of: list[list[MarkovRow]]) -> MarkovColumns:
    ru, rr, ri, rt, sr, si, sc = [], [], [], [], [], [], []
    for user, rows in enumerate(rows_of):
        for rank, row in enumerate(rows):
            for succ, count in row.successors:
                sr.append(len(ru))
                si.append(succ)
                sc.append(count)
            ru.append(user)
            rr.append(rank)
            ri.append(row.item)
            rt.append(row.total)
    return MarkovColumns(np.array(ru, dtype=np.int64), np.array(rr, dtype=np.int64),
                         np.array(ri, dtype=np.int64), np.array(rt, dtype=np.float64),
                         np.array(sr, dtype=np.int64), np.array(si, dtype=np.int64),
                         np.array(sc, dtype=np.float64))


def _assert_same(got: list[Scored], expected: list[Scored]) -> None:
    """Same items in the same order with the same reasons; scores equal up to float32
    rounding (BLAS sums the user-item dot products of a batch in another order)."""
    assert [s.item for s in got] == [s.item for s in expected]
    for g, e in zip(got, expected, strict=True):
        assert g.score == pytest.approx(e.score, rel=1e-5, abs=1e-9)
        assert [(r.kind, r.after) for r in g.reasons] == [(r.kind, r.after) for r in e.reasons]
        for gr, er in zip(g.reasons, e.reasons, strict=True):
            assert (gr.p is None) == (er.p is None) and (gr.score is None) == (er.score is None)
            assert gr.p is None or gr.p == pytest.approx(er.p, rel=1e-9)
            assert gr.score is None or gr.score == pytest.approx(er.score, rel=1e-5)


def _reference(rows: list[MarkovRow], user_vector: np.ndarray, item_vectors: np.ndarray,
               exclude: set[int], trending: list[tuple[int, float]], popular:
               list[tuple[int, float]], w: BlendWeights, n_items: int, size: int
               ) -> list[Scored]:
    markov = markov_scores(rows, n_items, ALPHA, DECAY)
    sequence = sequence_candidates(user_vector, item_vectors, 7, exclude,
                                   also=[*markov, *(i for i, _ in trending)]) \
        if w.needs_sequence else SequenceCandidates({}, 0.0)
    candidates = blend(markov, sequence, trending, w, markov_counts(rows, DECAY), n_items)
    return top_n(candidates, popular, exclude, size)


@pytest.mark.parametrize("normalisation,strength", [
    ("max", 1.0), ("probability", 1.0), ("rank", 1.0), ("loglinear", 0.3),
    ("loglinear", 10.0)])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 0.1), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0),
                                     (0.0, 0.0, 0.0), (0.7, 0.3, 0.2)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_lists_equal_the_reference(normalisation: str, strength: float,
                                         weights: tuple[float, ...], seed: int) -> None:
    rng = random.Random(seed)
    n_users, n_items, dim, size = 25, 60, 8, 10
    rows_of, exclude, history = _random_batch(rng, n_users, n_items)
    gen = np.random.default_rng(seed)
    item_vectors = gen.normal(size=(n_items - 5, dim)).astype(np.float32)  # 5 items too new
    user_vectors = [gen.normal(size=dim).astype(np.float32) if rng.random() < 0.8 else
                    np.zeros(dim, dtype=np.float32) for _ in range(n_users)]
    trending = [(i, rng.uniform(1, 50)) for i in rng.sample(range(n_items), 8)]
    popular = sorted(((i, rng.uniform(1, 100)) for i in range(n_items)), key=lambda p: -p[1])
    w = BlendWeights(*weights, normalisation=normalisation,  # type: ignore[arg-type]
                     strength=strength)

    got = rank_batch(BatchInputs(n_users, n_items, _columns(rows_of), exclude, history,
                                 trending, popular, user_vectors, item_vectors, 7),
                     w, ALPHA, DECAY, size)

    for u in range(n_users):
        expected = _reference(rows_of[u], user_vectors[u], item_vectors, exclude[u],
                              trending if history[u] else [], popular, w, n_items, size)
        _assert_same(got[u], expected)


def test_without_a_model_or_history_every_list_is_popular_items() -> None:
    popular = [(3, 10.0), (1, 5.0), (2, 1.0)]
    got = rank_batch(BatchInputs(2, 4, MarkovColumns.empty(), [set(), {1}], [False, False],
                                 [], popular), BlendWeights(), ALPHA, DECAY, 2)
    assert [[s.item for s in ranked] for ranked in got] == [[3, 1], [3, 2]]
    assert got[0][0].reasons[0].kind == "popular"


@pytest.mark.parametrize("w", [BlendWeights(1.0, 1.0, 0.0),
                               BlendWeights(2.0, 1.0, 0.0, "loglinear", 3.0)])
def test_an_approximate_index_that_scans_everything_gives_the_exact_lists(
        w: BlendWeights) -> None:
    """Big catalogues are searched through the IVF index user by user; scanning every list
    it must give the lists of the exact batch path."""
    rng = random.Random(5)
    n_users, n_items, dim = 12, 400, 8
    rows_of, exclude, history = _random_batch(rng, n_users, n_items)
    gen = np.random.default_rng(5)
    item_vectors = gen.normal(size=(n_items, dim)).astype(np.float32)
    user_vectors = [gen.normal(size=dim).astype(np.float32) for _ in range(n_users)]
    index = ItemIndex.build(item_vectors, IndexConfig(exact_below=0, list_size=16,
                                                      beta=0.0, scan_items=n_items))
    assert not index.exact
    popular = [(i, float(n_items - i)) for i in range(30)]

    def lists(with_index: bool) -> list[list[Scored]]:
        return rank_batch(BatchInputs(n_users, n_items, _columns(rows_of), exclude, history,
                                      [], popular, user_vectors, item_vectors, 7,
                                      index if with_index else None), w, ALPHA, DECAY, 10)

    for got, expected in zip(lists(True), lists(False), strict=True):
        _assert_same(got, expected)


def test_a_read_only_catalogue_gives_the_same_lists_without_warnings() -> None:
    """Item vectors in read-only memory (``np.frombuffer`` over a Redis reply) are scored by
    numpy's product, writable ones by torch's: the same lists, and no warning."""
    rng = random.Random(4)
    n_users, n_items, dim = 20, 300, 8
    rows_of, exclude, history = _random_batch(rng, n_users, n_items)
    gen = np.random.default_rng(4)
    writable = gen.normal(size=(n_items, dim)).astype(np.float32)
    read_only = np.frombuffer(writable.tobytes(), dtype=np.float32).reshape(n_items, dim)
    assert not read_only.flags.writeable
    user_vectors = [gen.normal(size=dim).astype(np.float32) for _ in range(n_users)]
    popular = [(i, float(n_items - i)) for i in range(30)]

    def lists(item_vectors: np.ndarray) -> list[list[Scored]]:
        return rank_batch(BatchInputs(n_users, n_items, _columns(rows_of), exclude, history,
                                      [], popular, user_vectors, item_vectors, 7),
                          BlendWeights(1.0, 1.0, 0.0), ALPHA, DECAY, 10)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_read_only = lists(read_only)
    for got, expected in zip(from_read_only, lists(writable), strict=True):
        _assert_same(got, expected)
