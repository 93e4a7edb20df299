"""Top-k over item embeddings: exact scan and IVF index against the exact dot product."""

from __future__ import annotations

import numpy as np
import pytest

from recmodels.scoring.item_index import IndexConfig, ItemIndex
from recmodels.scoring.ranking import SequenceCandidates, sequence_candidates

IVF = IndexConfig(exact_below=0, list_size=32, calibration_queries=64, seed=1)


def clustered(n: int = 4000, d: int = 16, clusters: int = 40,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items around cluster centres, and users that mix one to three centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    items = centres[rng.integers(0, clusters, n)] + 0.4 * rng.standard_normal((n, d))
    users = np.stack([centres[rng.choice(clusters, int(rng.integers(1, 4)), replace=False)]
                      .mean(axis=0) + 0.3 * rng.standard_normal(d) for _ in range(200)])
    return items.astype(np.float32), users.astype(np.float32)


def exact_top(items: np.ndarray, user: np.ndarray, k: int,
              exclude: set[int] | None = None) -> list[int]:
    found = sequence_candidates(user, items, k, exclude or set()).scores
    return sorted(found, key=lambda i: (-found[i], i))


def index_candidates(index: ItemIndex, user_vector: np.ndarray, k: int,
                     exclude: set[int]) -> SequenceCandidates:
    """What the index gives, in the shape of the per-user reference
    (:func:`recmodels.scoring.ranking.sequence_candidates`); nothing for an empty catalogue or
    a zero vector, as serving skips those."""
    if not index.n_items or not np.any(user_vector):
        return SequenceCandidates({}, 0.0)
    hits = index.search(user_vector, k, exclude)
    return SequenceCandidates(dict(zip(hits.items.tolist(), hits.scores.tolist(),
                                       strict=True)), hits.log_z)


def test_small_catalogue_is_scanned_exactly_and_matches_sequence_candidates() -> None:
    items, users = clustered(n=500)
    index = ItemIndex.build(items)
    assert index.exact
    for user in users[:20]:
        ids, scores = index.query(user, 10, {3, 7})
        assert ids.tolist() == exact_top(items, user, 10, {3, 7})
        np.testing.assert_allclose(scores, items[ids] @ user, rtol=1e-6)
        mine = index_candidates(index, user, 10, {3, 7})
        theirs = sequence_candidates(user, items.copy(), 10, {3, 7})
        assert mine.scores == pytest.approx(theirs.scores)
        assert mine.log_z == pytest.approx(theirs.log_z, rel=1e-5)


def test_ivf_recall_at_10_against_exact_reaches_the_target() -> None:
    items, users = clustered()
    index = ItemIndex.build(items, IVF, queries=users[100:])
    assert not index.exact and index.n_lists == len(items) // 32
    assert index.config.scan_items is not None
    assert index.config.scan_items < 0.5 * len(items)  # it does not just scan everything
    recalls = []
    for user in users[:100]:  # held out from the calibration
        ids, scores = index.query(user, 10)
        recalls.append(len(set(ids.tolist()) & set(exact_top(items, user, 10))) / 10)
        # scores are the exact dot products, best first
        np.testing.assert_allclose(scores, items[ids] @ user, rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(scores) <= 0)
    assert np.mean(recalls) >= 0.95


def test_ivf_softmax_normaliser_is_close_to_exact() -> None:
    items, users = clustered()
    index = ItemIndex.build(items, IVF, queries=users[100:])
    errors = np.array([index.search(user, 10).log_z
                       - sequence_candidates(user, items.copy(), 10, set()).log_z
                       for user in users[:100]])
    # softmax probabilities within a few % on average, within 25% for every user; the
    # scanned items alone would be off by up to ~100% here
    assert np.abs(errors).mean() < 0.03
    assert np.abs(errors).max() < 0.25


def test_ivf_scanning_every_item_is_exact() -> None:
    items, users = clustered(n=1000)
    index = ItemIndex.build(items, IndexConfig(exact_below=0, list_size=32, beta=1.0,
                                               scan_items=1000))
    for user in users[:20]:
        assert index.query(user, 10)[0].tolist() == exact_top(items, user, 10)


@pytest.mark.parametrize("config", [IndexConfig(), IVF], ids=["exact", "ivf"])
def test_excluded_items_are_never_returned(config: IndexConfig) -> None:
    items, users = clustered(n=2000)
    index = ItemIndex.build(items, config, queries=users)
    for user in users[:30]:
        best = exact_top(items, user, 20)
        exclude = set(best[:15]) | {len(items) + 5}  # unknown indexes are ignored
        ids, _ = index.query(user, 20, exclude)
        assert len(ids) == 20
        assert not exclude & set(ids.tolist())
        if index.exact:
            assert ids.tolist() == exact_top(items, user, 20, exclude)


@pytest.mark.parametrize("exact_below", [10**6, 0], ids=["exact", "ivf"])
def test_k_larger_than_the_catalogue_returns_every_item_left(exact_below: int) -> None:
    items, users = clustered(n=200)
    index = ItemIndex.build(items, IndexConfig(exact_below=exact_below, list_size=16,
                                               calibration_queries=16))
    assert index.exact == bool(exact_below)
    ids, scores = index.query(users[0], 500, {0, 1, 2})
    assert sorted(ids.tolist()) == list(range(3, 200))
    assert np.all(np.diff(scores) <= 0)


def test_degenerate_inputs() -> None:
    items, users = clustered(n=100)
    index = ItemIndex.build(items)
    assert index.query(users[0], 0)[0].size == 0
    assert index_candidates(index, np.zeros(items.shape[1], np.float32), 5, set()).scores == {}
    empty = ItemIndex.build(np.zeros((0, 8), np.float32))
    assert empty.query(np.ones(8, np.float32), 5)[0].size == 0
    assert index_candidates(empty, np.ones(8, np.float32), 5, set()).scores == {}
    with pytest.raises(ValueError, match="expected"):
        ItemIndex.build(np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="target_recall"):
        IndexConfig(target_recall=0.0)

