"""Markov scoring, exclusions and top-N, by hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from recmodels.scoring.ranking import MarkovRow, Reason, UserState, exclusions, markov_scores, top_n


def test_markov_scores_are_smoothed_recency_weighted_probabilities() -> None:
    rows = [MarkovRow(item=1, total=4.0, successors=[(2, 3.0), (3, 1.0)]),  # last item
            MarkovRow(item=0, total=2.0, successors=[(3, 2.0)])]
    scores = markov_scores(rows, n_items=4, alpha=0.5, decay=0.5)
    # P(.|1) = (c + .5) / (4 + 2) ; P(.|0) = (c + .5) / (2 + 2); weights 1 and .5, norm 1.5
    assert scores[2].score == pytest.approx((3.5 / 6) / 1.5)
    assert scores[3].score == pytest.approx((1.5 / 6 + 0.5 * 2.5 / 4) / 1.5)
    assert scores[2].reasons == [Reason("markov", after=1, p=pytest.approx(3.5 / 6))]
    # item 3's strongest single transition is from item 0 (0.5 * 0.625 > 0.25)
    assert scores[3].reasons[0].after == 0


def test_exclusions_cover_recent_bought_and_blocked() -> None:
    user = UserState("u", sequence=[5, 6, 7, 8], bought=frozenset({1}))
    assert exclusions(user, exclude_recent=2, exclude_purchased=True, blocked=[9]) == \
        {7, 8, 1, 9}
    assert exclusions(user, exclude_recent=0, exclude_purchased=False) == set()


def test_top_n_orders_by_score_then_fills_with_popular_below_them() -> None:
    candidates = markov_scores([MarkovRow(1, 3.0, [(2, 2.0), (3, 1.0)])], 10, 0.0, 1.0)
    ranked = top_n(candidates, popular=[(2, 50.0), (4, 40.0), (5, 10.0)], exclude={3}, n=3)
    assert [s.item for s in ranked] == [2, 4, 5]
    assert ranked[0].reasons[0].kind == "markov"
    assert [r.kind for s in ranked[1:] for r in s.reasons] == ["popular", "popular"]
    scores = [s.score for s in ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(s > 0 for s in scores)


def test_cold_user_gets_popular_items_only() -> None:
    ranked = top_n({}, popular=[(7, 3.0), (8, 2.0)], exclude={8}, n=5)
    assert [s.item for s in ranked] == [7]
    assert ranked[0].score == 1.0


def test_sequence_candidates_take_the_top_k_dot_products_without_excluded() -> None:
    import numpy as np

    from recmodels.scoring.ranking import sequence_candidates

    items = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]], dtype=np.float32)
    user = np.array([1.0, 0.5], dtype=np.float32)
    assert sequence_candidates(user, items, k=2, exclude=set()).scores == {3: 2.0, 2: 1.5}
    assert sequence_candidates(user, items, k=2, exclude={3}).scores == {2: 1.5, 0: 1.0}
    assert sequence_candidates(np.zeros(2, dtype=np.float32), items, k=2,
                               exclude=set()).scores == {}


def test_blend_normalises_each_source_and_keeps_every_reason() -> None:
    from recmodels.scoring.ranking import BlendWeights, blend

    markov = markov_scores([MarkovRow(1, 4.0, [(2, 3.0), (3, 1.0)])], 10, 0.0, 1.0)
    out = blend(markov, {3: 5.0, 4: 4.0}, [(4, 8.0), (5, 2.0)],
                BlendWeights(markov=1.0, sequence=1.0, trending=0.5))
    assert out[2].score == pytest.approx(1.0)  # best Markov candidate
    assert out[3].score == pytest.approx(1 / 3 + 1.0)  # Markov 0.25/0.75 + best sequence
    assert out[4].score == pytest.approx(math.exp(-1.0) + 0.5)
    assert out[5].score == pytest.approx(0.5 * 0.25)
    assert [r.kind for r in out[3].reasons] == ["markov", "sequence"]
    assert [r.kind for r in out[4].reasons] == ["sequence", "trending"]
    ranked = top_n(out, popular=[], exclude=set(), n=5)
    assert [s.item for s in ranked] == [3, 2, 4, 5]  # 1.33, 1.0, 0.87, 0.125


def test_loglinear_blend_sharpens_the_model_by_the_counts_smoothed_towards_it() -> None:
    from recmodels.scoring.ranking import (
        BlendWeights,
        SequenceCandidates,
        blend,
        markov_counts,
        markov_scores,
    )

    rows = [MarkovRow(1, 4.0, [(2, 3.0), (3, 1.0)]), MarkovRow(7, 2.0, [(3, 2.0)])]
    counts = markov_counts(rows, decay=0.5)
    assert counts.counts == {2: 3.0, 3: 2.0} and counts.total == 5.0  # 1 + 0.5 * 2
    markov = markov_scores(rows, 10, 0.0, 0.5)
    log_z = math.log(math.exp(2.0) + math.exp(1.0) + 1.0 + 7)  # 10 items, the others at 0
    sequence = SequenceCandidates({3: 2.0, 4: 1.0}, log_z, dots={2: 0.0, 3: 2.0})
    weights = BlendWeights(markov=2.0, sequence=1.0, trending=0.0, normalisation="loglinear",
                           strength=3.0)
    out = blend(markov, sequence, [], weights, counts, 10)

    def raw(item: int, dot: float) -> float:
        log_p = dot - log_z
        count = counts.counts.get(item, 0.0)
        return log_p + 2.0 * math.log((count + 3.0 * math.exp(log_p)) / (5.0 + 3.0))

    scores = {2: raw(2, 0.0), 3: raw(3, 2.0), 4: raw(4, 1.0)}
    best = max(scores.values())
    assert {i: c.score for i, c in out.items()} == pytest.approx(
        {i: 1 / (1 + best - s) for i, s in scores.items()})
    # the counts lift item 2 (the model's 0.0) above item 4 (the model's 1.0)
    assert [s.item for s in top_n(out, [], set(), 3)] == [3, 2, 4]
    assert [r.kind for r in out[3].reasons] == ["markov", "sequence"]
    # markov weight 0: the model's order alone
    alone = blend(markov, sequence, [], BlendWeights(0.0, 1.0, 0.0, "loglinear"), counts, 10)
    assert [s.item for s in top_n(alone, [], set(), 3)] == [3, 4]
    # a user without a vector: every p uniform, so the counts decide
    none = SequenceCandidates({}, 0.0, has_vector=False)
    counted = blend(markov, none, [], weights, counts, 10)
    assert [s.item for s in top_n(counted, [], set(), 3)] == [2, 3]
    with pytest.raises(ValueError, match="counts"):
        blend(markov, sequence, [], weights)
    with pytest.raises(ValueError, match="strength"):
        BlendWeights(normalisation="loglinear", strength=0.0)
