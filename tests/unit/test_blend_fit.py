"""Blend fitting on the trainer's holdout: the grid search, its ranking (the same as
serving's), the normalisations and the fitted blend's way into serving."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from recmodels.blend_fit import (
    CandidateScores,
    coarse_grid,
    evaluate,
    fit_weights,
    refine_grid,
    search,
    target_ranks,
)
from recmodels.blend_holdout import (
    TransitionCounts,
    candidate_row,
    fit_serving_blend,
    popular_items,
    stack_rows,
)
from recmodels.checkpoint import Checkpoint
from recmodels.sasrec import SASRec, SASRecConfig
from recmodels.scoring.ranking import (
    BlendWeights,
    MarkovCounts,
    MarkovRow,
    Scored,
    SequenceCandidates,
    blend,
    markov_counts,
    markov_scores,
    normalise_sources,
    top_n,
)
from recmodels.split import ItemVocab, leave_one_out
from serving.recommender import Recommender
from streamrec.kernel.settings import ServingSettings
from streamrec.state.model_holder import online_model
from streamrec.state.model_store import from_blobs, to_blobs


def _matrices(markov: list[list[float]], sequence: list[list[float]],
              targets: list[int], n_users: int | None = None) -> CandidateScores:
    """Users x 4 items (0..3), proposed where the score is > 0; no trending, no fill."""
    m, s = np.array(markov, dtype=float), np.array(sequence, dtype=float)
    u, c = m.shape
    scores = np.stack([m, s, np.zeros_like(m)])
    return CandidateScores(np.tile(np.arange(c), (u, 1)), scores, scores > 0,
                           np.full((u, c), -1), np.array(targets), n_users or u)


def test_fit_picks_the_blend_that_ranks_the_targets_first() -> None:
    # user 0: Markov is right (item 1), user 1: the sequence model is right (item 2);
    # user 2: only both together put item 3 first
    c = _matrices(markov=[[0.2, 1.0, 0.1, 0.0], [1.0, 0.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.9]],
                  sequence=[[1.0, 0.7, 0.0, 0.0], [0.0, 0.1, 1.0, 0.0], [0.0, 0.0, 1.0, 0.9]],
                  targets=[1, 2, 3])
    markov_only = evaluate(c, (1.0, 0.0, 0.0), k=1)
    sequence_only = evaluate(c, (0.0, 1.0, 0.0), k=1)
    both = evaluate(c, (1.0, 1.0, 0.0), k=1)
    assert markov_only["hr@1"] == pytest.approx(1 / 3)
    assert sequence_only["hr@1"] == pytest.approx(1 / 3)
    assert both["hr@1"] == pytest.approx(1.0)
    best = search(c, [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0, 0.0)], k=1)
    assert best.weights == (1.0, 1.0, 0.0)
    assert best.ndcg == pytest.approx(1.0)
    assert best.evaluated == 3


def test_fit_weights_keeps_a_single_source_when_blending_only_hurts() -> None:
    # Markov puts every target first; the sequence model pushes a wrong item up
    c = _matrices(markov=[[0.0, 1.0, 0.9, 0.0], [0.0, 0.0, 0.95, 1.0]],
                  sequence=[[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]], targets=[1, 3])
    found = fit_weights(c, k=1)
    assert found.ndcg == pytest.approx(1.0)
    ranks = target_ranks(c, found.weights)
    assert ranks.tolist() == [0.0, 0.0]
    assert found.weights[0] > 0
    assert found.weights[1] == 0 or found.weights[0] / found.weights[1] > 1.0


def test_users_left_out_of_the_rows_count_as_misses() -> None:
    c = _matrices(markov=[[0.0, 1.0, 0.0, 0.0]], sequence=[[0.0, 0.0, 0.0, 0.0]],
                  targets=[1], n_users=4)
    assert evaluate(c, (1.0, 0.0, 0.0)) == {"ndcg@10": 0.25, "hr@10": 0.25}


def test_a_source_with_weight_zero_proposes_nothing_and_ties_go_to_the_lower_item() -> None:
    c = _matrices(markov=[[0.0, 0.0, 1.0, 0.0]], sequence=[[1.0, 0.0, 1.0, 0.0]], targets=[2])
    assert target_ranks(c, (0.0, 1.0, 0.0)).tolist() == [1.0]  # item 0 ties and wins
    assert target_ranks(c, (1.0, 0.0, 0.0)).tolist() == [0.0]  # item 0 is not proposed
    not_listed = _matrices(markov=[[0.0, 0.0, 0.0, 0.0]], sequence=[[0.0, 0.0, 0.0, 1.0]],
                           targets=[3])
    assert math.isinf(target_ranks(not_listed, (1.0, 0.0, 0.0))[0])


def test_grids_cover_every_single_source_and_refine_around_the_best() -> None:
    grid = coarse_grid()
    for single in [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)]:
        assert single in grid
    assert len(grid) == len(set(grid))
    fine = refine_grid((4.0, 1.0, 0.25))
    assert (4.0, 1.0, 0.25) in fine
    assert {w[1] for w in fine} == {1.0}
    assert min(w[0] for w in fine) == pytest.approx(2.0)
    assert max(w[2] for w in fine) == pytest.approx(0.5)
    assert refine_grid((1.0, 0.0, 0.0)) == [(1.0, 0.0, 0.0)]


N_ITEMS = 30


def _random_case(rng: random.Random) -> tuple[dict[int, Scored], MarkovCounts,
                                              SequenceCandidates, list[tuple[int, float]],
                                              list[int], set[int]]:
    rows = [MarkovRow(rng.randrange(N_ITEMS), 10.0,
                      [(rng.randrange(N_ITEMS), float(rng.randint(1, 5)))
                       for _ in range(rng.randint(0, 6))]) for _ in range(rng.randint(0, 3))]
    markov = markov_scores(rows, N_ITEMS, 0.1, 0.5)
    dots = {i: rng.uniform(-3, 3) for i in range(N_ITEMS - 2)}  # 2 items the model lacks
    log_z = math.log(sum(math.exp(d) for d in dots.values()))
    seq = {i: dots[i] for i in rng.sample(sorted(dots), rng.randint(0, 8))}
    sequence = SequenceCandidates(seq, log_z, dots, has_vector=rng.random() < 0.8)
    trending = [(rng.randrange(N_ITEMS), float(rng.randint(1, 9))) for _ in range(3)]
    trending = list(dict(trending).items())
    popular = rng.sample(range(N_ITEMS), 8)
    exclude = set(rng.sample(range(N_ITEMS), 3))
    return markov, markov_counts(rows, 0.5), sequence, trending, popular, exclude


@pytest.mark.parametrize("normalisation,strength", [
    ("max", 1.0), ("probability", 1.0), ("rank", 1.0), ("loglinear", 0.3),
    ("loglinear", 10.0)])
def test_ranks_on_the_matrices_are_the_positions_serving_publishes(
        normalisation: str, strength: float) -> None:
    rng = random.Random(5)
    weight_choices = [(1.0, 1.0, 0.1), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 0.0),
                      (3.0, 0.5, 0.0), (0.2, 1.0, 2.0)]
    for _ in range(60):
        markov, counts, sequence, trending, popular, exclude = _random_case(rng)
        row = candidate_row(markov, sequence, trending, popular, exclude, counts, N_ITEMS)
        for target in row.items:
            c = stack_rows([row], [target], normalisation, 1,  # type: ignore[arg-type]
                           strength)
            for w in weight_choices:
                weights = BlendWeights(*w, normalisation=normalisation,  # type: ignore[arg-type]
                                       strength=strength)
                served = top_n(blend(markov, sequence, trending, weights, counts, N_ITEMS),
                               [(i, 1.0 / (1 + p)) for p, i in enumerate(popular)],
                               exclude, n=100)
                items = [s.item for s in served]
                rank = target_ranks(c, w)[0]
                if target in items:
                    assert rank == items.index(target), (w, target, items)
                else:
                    assert math.isinf(rank)


def test_normalisations() -> None:
    markov = markov_scores([MarkovRow(1, 4.0, [(2, 3.0), (3, 1.0)])], 10, 0.0, 1.0)
    sequence = SequenceCandidates({3: 2.0, 4: 1.0}, math.log(math.exp(2.0) + math.exp(1.0) + 1))
    trending = [(5, 4.0), (6, 2.0)]
    top = normalise_sources(markov, sequence, trending, "max")
    assert top.markov == pytest.approx({2: 1.0, 3: 1 / 3})
    assert top.sequence == pytest.approx({3: 1.0, 4: math.exp(-1.0)})
    assert top.trending == pytest.approx({5: 1.0, 6: 0.5})
    prob = normalise_sources(markov, sequence, trending, "probability")
    assert prob.markov == pytest.approx({2: 0.75, 3: 0.25})
    z = math.exp(2.0) + math.exp(1.0) + 1
    assert prob.sequence == pytest.approx({3: math.exp(2.0) / z, 4: math.exp(1.0) / z})
    rank = normalise_sources(markov, sequence, trending, "rank")
    assert rank.markov == {2: 1.0, 3: 0.5}
    assert rank.sequence == {3: 1.0, 4: 0.5}
    assert rank.trending == {5: 1.0, 6: 0.5}
    with pytest.raises(ValueError, match="normalisation"):
        BlendWeights(normalisation="softmax")  # type: ignore[arg-type]


def test_transition_counts_read_rows_like_serving() -> None:
    counts = TransitionCounts([[1, 2, 3, 2, 4], [2, 3], [5]])
    rows = counts.rows_of([9, 3, 2, 2], m=3, size=1)
    assert [r.item for r in rows] == [2, 3, 9]  # last distinct items, most recent first
    assert rows[0].total == 3.0 and list(rows[0].successors) == [(3, 2.0)]
    assert rows[2].total == 0.0 and not rows[2].successors
    # the user's own next transition (2 -> 3, counted twice) is seen once less; the
    # other rows are untouched
    own = counts.rows_of([9, 3, 2, 2], m=3, size=5, target=3)
    assert own[0].total == 2.0 and dict(own[0].successors) == {3: 1.0, 4: 1.0}
    assert own[1] == counts.rows_of([9, 3, 2, 2], m=3, size=5)[1]
    assert counts.rows_of([5], m=1, size=5, target=1)[0].total == 0.0
    assert popular_items([[1, 2, 2], [3, 2, 1]], 2) == [(2, 3.0), (1, 2.0)]


def _tiny_checkpoint(n_items: int) -> tuple[Checkpoint, dict[str, list[str]]]:
    rng = random.Random(3)
    sequences = {f"u{u}": [str(rng.randint(1, n_items)) for _ in range(rng.randint(3, 8))]
                 for u in range(40)}
    vocab = ItemVocab([str(i) for i in range(1, n_items + 1)])
    config = SASRecConfig(hidden=16, max_len=10, n_blocks=1)
    torch.manual_seed(0)
    model = SASRec(n_items, config)
    return Checkpoint(config, vocab, model.state_dict()), sequences


def test_fit_serving_blend_on_a_tiny_model_returns_a_blend_no_worse_than_each_source(
) -> None:
    checkpoint, sequences = _tiny_checkpoint(20)
    split = leave_one_out(sequences, checkpoint.vocab)
    fit = fit_serving_blend(split, checkpoint, ServingSettings(), row_size=100, max_users=30)
    assert fit.users == 30
    for row in fit.holdout["sources"].values():
        assert fit.holdout["ndcg@10"] >= row["ndcg@10"]
    meta = fit.to_meta()
    assert meta["normalisation"] == fit.weights.normalisation
    json.dumps(meta)  # stored as JSON with the model version


def test_the_fitted_blend_travels_with_the_version_and_serving_uses_it_when_asked() -> None:
    checkpoint, _ = _tiny_checkpoint(12)
    fitted = BlendWeights(2.0, 1.0, 0.0, "probability")
    weights, meta = to_blobs(checkpoint, "sasrec-0001", {"ndcg@10": 0.5}, 0,
                             fitted.to_meta(users=10))
    published = from_blobs(weights, meta, "test")
    assert published.blend == fitted
    online = online_model(published)
    assert online.blend == fitted
    plain = from_blobs(*to_blobs(checkpoint, "sasrec-0002", {}, 0), "test")
    assert plain.blend is None

    def recommender(mode: str) -> Recommender:
        settings = ServingSettings(blend=mode, weight_markov=1.0, weight_sequence=0.0,  # type: ignore[arg-type]
                                   weight_trending=0.0)
        return Recommender(None, None, settings, lambda: 0)  # type: ignore[arg-type]

    own = BlendWeights(1.0, 0.0, 0.0, "max")
    assert recommender("fitted").weights(online) == fitted
    assert recommender("fitted").weights(online_model(plain)) == own
    assert recommender("fitted").weights(None) == own
    assert recommender("settings").weights(online) == own


def test_replay_eval_reports_the_hybrid_gain_over_each_single_source() -> None:
    from streamrec.app.replay_eval import hybrid_gains

    report = {"hybrid": {"hr@10": 0.12, "ndcg@10": 0.066},
              "markov": {"hr@10": 0.10, "ndcg@10": 0.060},
              "popularity": {"hr@10": 0.0, "ndcg@10": 0.0}}
    gains = hybrid_gains(report)
    assert gains["markov"] == pytest.approx({"hr@10": 0.2, "ndcg@10": 0.1})
    assert gains["popularity"]["hr@10"] == math.inf
    assert "hybrid" not in gains
    assert hybrid_gains({"markov": report["markov"]}) == {}
