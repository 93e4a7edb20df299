"""Evaluation protocol (sampled and full), metrics and the count baselines."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from recmodels.baselines import MarkovRecommender, PopularityRecommender, fit_baseline
from recmodels.evaluation import EvalConfig, Evaluator, intra_list_diversity, rank_metrics
from recmodels.interface import Recommender, recommend
from recmodels.split import ItemVocab, LeaveOneOutSplit, leave_one_out

N_ITEMS = 300


def cyclic_split(n_users: int = 40, length: int = 6, n_items: int = N_ITEMS,
                 seed: int = 0) -> LeaveOneOutSplit:
    """Every user walks +1 through the catalogue from a random start."""
    rng = np.random.default_rng(seed)
    seqs = {}
    for u in range(n_users):
        start = int(rng.integers(1, n_items + 1))
        seqs[f"u{u}"] = [str((start + i - 1) % n_items + 1) for i in range(length)]
    vocab_items = {str(i) for i in range(1, n_items + 1)}
    seqs["all-items"] = sorted(vocab_items, key=int)[:2]  # training-only
    return leave_one_out(seqs, ItemVocab(sorted(vocab_items, key=int)))


class NextItemModel:
    """Knows the rule of ``cyclic_split``: scores last + 1 highest, then last + 2, ..."""

    def __init__(self, n_items: int, reverse: bool = False) -> None:
        self._n = n_items
        self._reverse = reverse

    @property
    def n_items(self) -> int:
        return self._n

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        out = np.zeros((len(histories), self._n + 1), dtype=np.float32)
        items = np.arange(1, self._n + 1)
        for row, history in enumerate(histories):
            distance = (items - history[-1] - 1) % self._n  # 0 for last + 1
            out[row, 1:] = distance if self._reverse else -distance
        return out


class ConstantModel:
    def __init__(self, n_items: int) -> None:
        self._n = n_items

    @property
    def n_items(self) -> int:
        return self._n

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        return np.ones((len(histories), self._n + 1), dtype=np.float32)


class HistoryLoverModel(NextItemModel):
    """Scores the user's own history above everything else, then the true next item."""

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        out = super().score(histories)
        for row, history in enumerate(histories):
            out[row, list(history)] = 1e6
        return out


def test_rank_metrics_match_the_definitions() -> None:
    m = rank_metrics(np.array([0, 1, 9, 10, 50]), ks=(10,))
    assert m["hr@10"] == pytest.approx(3 / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 10 + 1 / 11 + 1 / 51) / 5)
    assert m["precision@10"] == pytest.approx(0.06)
    assert m["recall@10"] == pytest.approx(0.6)
    p, r = 1 / 10, 1.0
    assert m["f1@10"] == pytest.approx(3 / 5 * 2 * p * r / (p + r))


@pytest.mark.parametrize("protocol", ["sampled", "full"])
@pytest.mark.parametrize("stage", ["valid", "test"])
def test_a_perfect_model_scores_one_and_its_reverse_zero(protocol: str, stage: str) -> None:
    split = cyclic_split()
    evaluator = Evaluator(split)
    best = evaluator.evaluate(NextItemModel(N_ITEMS), stage, protocol)  # type: ignore[arg-type]
    assert best["hr@10"] == 1.0
    assert best["ndcg@10"] == 1.0
    assert best["mrr"] == 1.0
    assert best["users"] == 40
    worst = evaluator.evaluate(NextItemModel(N_ITEMS, reverse=True), stage,
                               protocol)  # type: ignore[arg-type]
    assert worst["hr@20"] == 0.0


def test_sampled_ties_count_half_so_a_constant_model_ranks_in_the_middle() -> None:
    evaluator = Evaluator(cyclic_split())
    m = evaluator.evaluate(ConstantModel(N_ITEMS), "test", "sampled")
    assert m["hr@20"] == 0.0
    assert m["mrr"] == pytest.approx(1 / 51)  # rank 50 among 101
    optimistic = Evaluator(cyclic_split(), EvalConfig(ties="optimistic"))
    assert optimistic.evaluate(ConstantModel(N_ITEMS), "test", "sampled")["hr@10"] == 1.0


def test_negatives_are_distinct_unseen_items_and_reproducible_per_seed() -> None:
    split = cyclic_split()
    negatives = Evaluator(split).negatives("test")
    assert negatives.shape == (40, 100)
    for row, user in enumerate(split.eval_users):
        assert len(set(negatives[row].tolist())) == 100
        assert not set(negatives[row].tolist()) & split.interacted(user)
        assert negatives[row].min() >= 1
    again = Evaluator(split).negatives("test")
    other_seed = Evaluator(split, EvalConfig(seed=7)).negatives("test")
    assert np.array_equal(negatives, again)
    assert not np.array_equal(negatives, other_seed)


def test_full_ranking_excludes_the_history_but_sampled_never_samples_it() -> None:
    evaluator = Evaluator(cyclic_split())
    model = HistoryLoverModel(N_ITEMS)
    assert evaluator.evaluate(model, "test", "full")["ndcg@10"] == 1.0
    assert evaluator.evaluate(model, "test", "sampled")["mrr"] == 1.0


def test_test_stage_history_ends_with_the_validation_item() -> None:
    split = leave_one_out({"u": ["1", "2", "3", "4", "5"]})
    evaluator = Evaluator(split)
    assert evaluator.cases("valid").histories == [[1, 2, 3]]
    assert evaluator.cases("test").histories == [[1, 2, 3, 4]]
    assert evaluator.cases("test").targets.tolist() == [5]


def test_coverage_counts_distinct_recommended_items() -> None:
    split = cyclic_split()
    pop = PopularityRecommender(np.arange(N_ITEMS + 1, dtype=np.float32))
    # every user gets (nearly) the same list: coverage is about k / n, far below 1
    assert Evaluator(split).evaluate(pop, "test", "full")["coverage@10"] <= 20 / N_ITEMS
    personal = Evaluator(split).evaluate(NextItemModel(N_ITEMS), "test", "full")
    assert personal["coverage@10"] > 0.5  # 40 users x 10 different next items


def test_diversity_is_one_for_orthogonal_and_zero_for_identical_embeddings() -> None:
    items = torch.tensor([[1, 2, 3]])
    assert intra_list_diversity(items, torch.eye(4)) == pytest.approx(1.0)
    assert intra_list_diversity(items, torch.ones(4, 3)) == pytest.approx(0.0, abs=1e-6)
    split = cyclic_split()
    m = Evaluator(split).evaluate(NextItemModel(N_ITEMS), "test", "full",
                                  item_embeddings=torch.eye(N_ITEMS + 1))
    assert m["diversity@10"] == pytest.approx(1.0)


class CountingModel(NextItemModel):
    """Noisy scores (ties, misses) that count how many histories were scored."""

    def __init__(self, n_items: int) -> None:
        super().__init__(n_items)
        self.scored = 0

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        self.scored += len(histories)
        rng = np.random.default_rng(len(histories))
        noise = rng.integers(0, 3, size=(len(histories), self._n + 1)).astype(np.float32)
        return super().score(histories) + noise * 100


def test_both_protocols_from_one_scoring_pass_equal_each_alone() -> None:
    split = cyclic_split()
    evaluator = Evaluator(split, EvalConfig(batch_size=16))
    model = CountingModel(N_ITEMS)
    both = evaluator.evaluate_protocols(model, "valid", ("sampled", "full"), torch.eye(N_ITEMS + 1))
    users = len(evaluator.users)
    assert model.scored == users, "each history scored once for both protocols"
    for protocol in ("sampled", "full"):
        alone = evaluator.evaluate(model, "valid", protocol, torch.eye(N_ITEMS + 1))
        assert both[protocol] == alone
    assert 0.0 < both["full"]["ndcg@10"] < 1.0 and "coverage@10" in both["full"]
    assert "coverage@10" not in both["sampled"]


def test_model_with_wrong_catalogue_size_is_refused() -> None:
    with pytest.raises(ValueError, match="scores 5 items"):
        Evaluator(cyclic_split()).evaluate(ConstantModel(5), "test", "sampled")


def test_popularity_counts_items_and_ranks_them_the_same_for_everyone() -> None:
    pop = PopularityRecommender.fit([[1, 2, 2], [2, 3]], n_items=4)
    scores = pop.score([[1], []])
    assert scores.shape == (2, 5)
    assert scores[0].tolist() == [0, 1, 3, 1, 0]
    assert np.array_equal(scores[0], scores[1])


def _row(markov: MarkovRecommender, item: int) -> dict[int, int]:
    """The counts of what followed ``item``, as the scoring reads them."""
    counts, _ = markov.rows([[item]])
    return {int(j): int(counts[0, j]) for j in np.flatnonzero(counts[0])}


def test_markov_scores_transition_counts_and_breaks_ties_by_popularity() -> None:
    markov = MarkovRecommender.fit([[1, 2], [1, 2], [1, 3], [4, 4, 4, 1]], n_items=5)
    assert _row(markov, 1) == {2: 2, 3: 1}
    assert _row(markov, 4) == {4: 2, 1: 1}
    scores = markov.score([[5, 1], [5], []])
    assert np.argsort(-scores[0, 1:])[:2].tolist() == [1, 2]  # items 2 then 3
    # empty row and empty history: pure popularity order (1: 4 times, 4: 3, 2: 2)
    for row in (1, 2):
        assert np.argsort(-scores[row, 1:], kind="stable")[:3].tolist() == [0, 3, 1]
    assert scores[0, 2] > scores[0, 3] > scores[0, 4]  # counts dominate popularity


def test_baseline_fit_policy_never_counts_targets() -> None:
    split = leave_one_out({"u": ["1", "2", "3", "4"], "v": ["1", "2", "3"]})
    valid_markov = fit_baseline("markov", split, "valid")
    test_markov = fit_baseline("markov", split, "test")
    assert isinstance(valid_markov, MarkovRecommender)
    assert isinstance(test_markov, MarkovRecommender)
    assert _row(valid_markov, 2) == {}  # 2 -> 3 is the validation target of u
    assert _row(test_markov, 2) == {3: 1}  # part of u's test-time history
    assert _row(test_markov, 3) == {}  # 3 -> 4 is u's test target
    pop = fit_baseline("popularity", split, "test")
    assert pop.score([[1]])[0].tolist() == [0, 2, 1, 0, 0]


def test_recommend_drops_excluded_and_seen_items_and_sorts_by_score() -> None:
    model: Recommender = PopularityRecommender(np.array([0, 5, 4, 3, 2, 1], np.float32))
    recs = recommend(model, [[1], []], k=3, exclude=[[3], [2]])
    assert [i for i, _ in recs[0]] == [2, 4, 5]
    assert [i for i, _ in recs[1]] == [1, 3, 4]
    assert all(a[1] >= b[1] for a, b in zip(recs[0], recs[0][1:], strict=False))
    exhausted = recommend(model, [[1, 2, 3, 4]], k=3)
    assert [i for i, _ in exhausted[0]] == [5]
