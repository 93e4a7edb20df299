"""Data-parallel bookkeeping (pure): each rank's share of an epoch, and the CLI's
hyperparameter overrides."""

from __future__ import annotations

import pytest

from recmodels.parallel import SINGLE, Workers
from streamrec.app.train_cli import parse_overrides


@pytest.mark.parametrize("n_batches", [0, 1, 7, 8, 9, 250])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_take_disjoint_equal_shares_and_leave_out_at_most_world_minus_one(
        n_batches: int, world: int) -> None:
    batches = list(range(n_batches))
    shares = [Workers(rank, world).shard(batches) for rank in range(world)]
    assert len({len(s) for s in shares}) == 1  # every rank takes as many steps
    taken = [b for s in shares for b in s]
    assert len(taken) == len(set(taken))  # no batch twice
    assert n_batches - len(taken) == n_batches % world < world


def test_one_process_takes_every_batch_in_order() -> None:
    assert SINGLE.shard(list(range(5))) == [0, 1, 2, 3, 4]
    assert SINGLE.main and not SINGLE.distributed
    assert SINGLE.decide(0.25) == 0.25 and SINGLE.mean(3.0) == 3.0


def test_overrides_read_numbers_and_text_and_name_bad_ones() -> None:
    assert parse_overrides(["max_len=50", "loss=sampled", "lr=0.002", "refit=false"]) == {
        "max_len": 50, "loss": "sampled", "lr": 0.002, "refit": False}
    with pytest.raises(ValueError, match="max_lenn: not a hyperparameter"):
        parse_overrides(["max_lenn=50"])
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        parse_overrides(["max_len"])


def test_shards_of_an_evaluation_combine_into_the_whole() -> None:
    from recmodels.baselines import fit_baseline
    from recmodels.evaluation import EvalConfig, Evaluator
    from tests.unit.test_sasrec import structured_split

    split = structured_split()
    evaluator = Evaluator(split, EvalConfig(ks=(10,)))
    model = fit_baseline("markov", split, "valid")
    whole = evaluator.evaluate(model, "valid", "sampled")
    parts = [evaluator.evaluate(model, "valid", "sampled", shard=(i, 3)) for i in range(3)]
    assert sum(p["users"] for p in parts) == whole["users"]
    for name in ("hr@10", "ndcg@10", "mrr"):
        combined = sum(p["users"] * p[name] for p in parts) / whole["users"]
        assert combined == pytest.approx(whole[name], rel=1e-12)
    assert parts[0]["ndcg@10"] != parts[1]["ndcg@10"]  # the shards differ: not a copy
