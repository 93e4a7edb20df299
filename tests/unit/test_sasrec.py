"""SASRec model, loss, training and checkpoints, plus one suite run against every model."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from recmodels import checkpoint as checkpoint_module
from recmodels.baselines import fit_baseline
from recmodels.checkpoint import Checkpoint, CheckpointError, warm_start
from recmodels.evaluation import EvalConfig, Evaluator
from recmodels.interface import Recommender, as_float_tensor, recommend
from recmodels.losses import full_softmax_loss
from recmodels.sasrec import SASRec, SASRecConfig, SASRecRecommender, pad_histories, shape_bucket
from recmodels.split import ItemVocab, LeaveOneOutSplit, leave_one_out
from recmodels.training import patience_factor, refit, train, training_data
from streamrec.app.train_cli import evaluate_main, train_main

N_ITEMS = 40
TINY = SASRecConfig(max_len=8, hidden=32, n_blocks=1, n_heads=2, dropout=0.1, lr=5e-3,
                    batch_size=32, max_epochs=8, patience=8, seed=3)


def structured_split(n_users: int = 240, n_items: int = N_ITEMS, seed: int = 0,
                     ) -> LeaveOneOutSplit:
    """Users walk through the catalogue in steps of +1 or +3 (fixed per user), so the next
    item follows from the last two: learnable by SASRec, not by popularity."""
    rng = np.random.default_rng(seed)
    seqs = {}
    for u in range(n_users):
        item, step = int(rng.integers(0, n_items)), 1 if u % 2 else 3
        seq = []
        for _ in range(int(rng.integers(5, 10))):
            seq.append(str(item % n_items + 1))
            item += step
        seqs[f"u{u}"] = seq
    return leave_one_out(seqs, ItemVocab([str(i) for i in range(1, n_items + 1)]))


@pytest.fixture(scope="module")
def split() -> LeaveOneOutSplit:
    return structured_split()


@pytest.fixture(scope="module")
def trained(split: LeaveOneOutSplit) -> Checkpoint:
    return train(split, TINY, device="cpu")


def make_popularity(split: LeaveOneOutSplit, _: Checkpoint) -> Recommender:
    return fit_baseline("popularity", split, "test")


def make_markov(split: LeaveOneOutSplit, _: Checkpoint) -> Recommender:
    return fit_baseline("markov", split, "test")


def make_sasrec(_: LeaveOneOutSplit, ckpt: Checkpoint) -> Recommender:
    return ckpt.recommender("cpu")


MODELS: dict[str, Callable[[LeaveOneOutSplit, Checkpoint], Recommender]] = {
    "popularity": make_popularity, "markov": make_markov, "sasrec": make_sasrec}


@pytest.fixture(params=sorted(MODELS))
def model(request: pytest.FixtureRequest, split: LeaveOneOutSplit,
          trained: Checkpoint) -> Iterator[Recommender]:
    yield MODELS[request.param](split, trained)


# ---- one suite, every recommender ---------------------------------------------------------

HISTORIES = [[1, 2, 3], [7], [], [40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30]]


def test_scores_have_one_column_per_item_plus_padding(model: Recommender) -> None:
    scores = as_float_tensor(model.score(HISTORIES))
    assert scores.shape == (len(HISTORIES), N_ITEMS + 1)
    assert torch.isfinite(scores[:, 1:]).all()


def test_excluded_and_seen_items_never_come_back(model: Recommender) -> None:
    exclude = [[4, 5, 6], [8, 9], [1, 2], [29, 28]]
    for k in (1, 5, 20):
        recs = recommend(model, HISTORIES, k=k, exclude=exclude)
        for history, banned, rec in zip(HISTORIES, exclude, recs, strict=True):
            items = [i for i, _ in rec]
            assert len(items) == k
            assert len(set(items)) == k
            assert not set(items) & (set(history) | set(banned))
            assert all(1 <= i <= N_ITEMS for i in items)
            scores = [s for _, s in rec]
            assert scores == sorted(scores, reverse=True)


def test_scores_do_not_depend_on_the_rest_of_the_batch(model: Recommender) -> None:
    together = as_float_tensor(model.score(HISTORIES))
    for row, history in enumerate(HISTORIES):
        alone = as_float_tensor(model.score([history]))[0]
        assert torch.allclose(alone[1:], together[row, 1:], atol=1e-5)


def test_every_model_is_evaluated_through_the_same_interface(model: Recommender,
                                                             split: LeaveOneOutSplit) -> None:
    m = Evaluator(split, EvalConfig(n_negatives=20)).evaluate(model, "test", "sampled")
    assert 0.0 <= m["ndcg@10"] <= m["hr@10"] <= 1.0
    assert m["users"] == len(split.eval_users)


# ---- SASRec --------------------------------------------------------------------------------

def test_training_smoke_finite_loss_and_better_than_untrained(
        split: LeaveOneOutSplit, trained: Checkpoint) -> None:
    assert trained.history, "no epoch ran"
    assert all(math.isfinite(row["loss"]) for row in trained.history)
    assert trained.history[-1]["loss"] < trained.history[0]["loss"]
    evaluator = Evaluator(split, EvalConfig(ks=(10,)))
    torch.manual_seed(TINY.seed)
    untrained = SASRecRecommender(SASRec(split.n_items, TINY))
    before = evaluator.evaluate(untrained, "valid", "full")
    after = evaluator.evaluate(trained.recommender(), "valid", "full")
    assert after["ndcg@10"] > before["ndcg@10"] + 0.2
    assert after["hr@10"] > 0.6
    assert 1 <= trained.meta["best_epoch"] <= len(trained.history)
    assert trained.meta["best_valid"] == max(r["valid_full_ndcg@10"] for r in trained.history)


def test_checkpoint_round_trip_gives_identical_scores(trained: Checkpoint,
                                                      tmp_path: Path) -> None:
    trained.save(tmp_path / "ckpt")
    loaded = Checkpoint.load(tmp_path / "ckpt")
    assert loaded.config == trained.config
    assert loaded.vocab == trained.vocab
    assert loaded.history == trained.history
    assert torch.equal(trained.recommender().score(HISTORIES),
                       loaded.recommender().score(HISTORIES))


def test_checkpoint_without_safetensors_uses_a_weights_only_state_dict(
        trained: Checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_module, "_st_save", None)
    trained.save(tmp_path)
    assert (tmp_path / "model.pt").exists()
    loaded = Checkpoint.load(tmp_path)
    assert torch.equal(trained.recommender().score(HISTORIES),
                       loaded.recommender().score(HISTORIES))


def test_loading_a_broken_checkpoint_names_the_problem(trained: Checkpoint,
                                                       tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint\.json"):
        Checkpoint.load(tmp_path)
    trained.save(tmp_path)
    meta = (tmp_path / "checkpoint.json").read_text()
    (tmp_path / "checkpoint.json").write_text(meta.replace('"items": ["1", ', '"items": ['))
    with pytest.raises(CheckpointError, match="shape"):
        Checkpoint.load(tmp_path)


def test_warm_start_keeps_known_items_and_adds_fresh_rows(trained: Checkpoint) -> None:
    vocab = ItemVocab([*trained.vocab.items, "new-a", "new-b"])
    model = warm_start(trained, vocab, seed=0)
    old = trained.model()
    assert model.n_items == N_ITEMS + 2
    assert torch.equal(model.item_emb.weight[1:N_ITEMS + 1], old.item_emb.weight[1:])
    assert not torch.equal(model.item_emb.weight[N_ITEMS + 1], torch.zeros(TINY.hidden))
    # the model of the old items is unchanged: same scores on old items
    histories = [[1, 2, 3], [10, 11]]
    before = SASRecRecommender(old).score(histories)
    after = SASRecRecommender(model).score(histories)
    assert torch.allclose(before, after[:, : N_ITEMS + 1], atol=1e-5)


def test_warm_start_matches_items_by_id_not_by_position(trained: Checkpoint) -> None:
    reordered = ItemVocab(list(reversed(trained.vocab.items)))
    model = warm_start(trained, reordered)
    old = trained.model()
    item = "7"
    assert torch.equal(model.item_emb.weight[reordered.index(item)],
                       old.item_emb.weight[trained.vocab.index(item)])


def test_attention_is_causal_and_ignores_left_padding() -> None:
    torch.manual_seed(0)
    model = SASRec(N_ITEMS, TINY).eval()
    seqs = torch.tensor([[0, 0, 5, 6, 7, 8]])
    changed = torch.tensor([[0, 0, 5, 6, 7, 30]])
    with torch.no_grad():
        a, b = model.encode(seqs), model.encode(changed)
        assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)  # future item invisible
        assert not torch.allclose(a[:, 5], b[:, 5])
        assert torch.equal(a[:, :2], torch.zeros_like(a[:, :2]))  # padded outputs
        shorter = model.encode(torch.tensor([[5, 6, 7, 8]]))
        assert torch.allclose(a[:, -1], shorter[:, -1], atol=1e-5)  # padding width free


def test_pad_histories_keeps_the_last_items_right_aligned() -> None:
    out = pad_histories([[1, 2, 3, 4, 5], [9]], max_len=3)
    assert out.tolist() == [[3, 4, 5], [0, 0, 9]]


def test_pad_histories_takes_any_sequence_of_item_indexes() -> None:
    rows = [(1, 2), np.array([7, 8, 9, 10], dtype=np.int32), torch.tensor([4]), [], range(5, 7)]
    out = pad_histories(rows, max_len=3)
    assert out.dtype == torch.long
    assert out.tolist() == [[0, 1, 2], [8, 9, 10], [0, 0, 4], [0, 0, 0], [0, 5, 6]]
    assert pad_histories([], max_len=3).shape == (0, 1)


def test_fused_cpu_loss_equals_plain_cross_entropy() -> None:
    torch.manual_seed(0)
    model = SASRec(N_ITEMS, TINY)
    hidden = torch.randn(37, TINY.hidden, requires_grad=True)
    targets = torch.randint(1, N_ITEMS + 1, (37,))
    loss = full_softmax_loss(model, hidden, targets, chunk=8)
    loss.backward()
    grads = hidden.grad.clone(), model.item_emb.weight.grad.clone()
    hidden.grad, model.item_emb.weight.grad = None, None
    logits = hidden @ model.item_emb.weight.T
    reference = F.cross_entropy(logits[:, 1:], targets - 1)
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert torch.allclose(grads[0], hidden.grad, atol=1e-6)
    assert torch.allclose(grads[1], model.item_emb.weight.grad, atol=1e-6)
    assert torch.count_nonzero(grads[1][0]) == 0  # padding row never learns


def test_sampled_softmax_option_trains_with_finite_loss(split: LeaveOneOutSplit) -> None:
    config = SASRecConfig(**{**TINY.to_dict(), "loss": "sampled", "n_negatives": 16,
                             "max_epochs": 2})
    ckpt = train(split, config, device="cpu")
    assert all(math.isfinite(r["loss"]) for r in ckpt.history)
    assert len(ckpt.history) == 2


def test_auto_loss_is_full_softmax_up_to_the_threshold_and_sampled_above() -> None:
    config = SASRecConfig(sampled_above_items=1000)
    assert config.loss == "auto"
    assert config.loss_for(1000) == "ce"
    assert config.loss_for(1001) == "sampled"
    assert SASRecConfig(loss="ce").loss_for(10 ** 6) == "ce"
    assert SASRecConfig(loss="sampled").loss_for(10) == "sampled"


def test_time_budget_stops_training_before_an_epoch_that_would_overrun(
        split: LeaveOneOutSplit) -> None:
    ticks = itertools.count(step=10.0)  # every clock read: +10 s
    ckpt = train(split, TINY, time_budget_s=100.0, device="cpu",
                 clock=lambda: float(next(ticks)))
    assert 1 <= len(ckpt.history) < TINY.max_epochs


def test_training_examples_shift_by_one_and_keep_the_last_max_len() -> None:
    data = training_data([[1, 2, 3], [5], list(range(1, 13))], max_len=4)
    assert data.inputs.tolist() == [[0, 0, 1, 2], [8, 9, 10, 11]]
    assert data.targets.tolist() == [[0, 0, 2, 3], [9, 10, 11, 12]]
    assert data.lengths.tolist() == [2, 4]


def test_config_rejects_bad_values_and_unknown_keys() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(hidden=10, n_heads=3)
    with pytest.raises(ValueError, match="dropout"):
        SASRecConfig(dropout=1.0)
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        SASRecConfig.from_dict({"hiden": 64})
    assert SASRecConfig.from_dict(TINY.to_dict()) == TINY


def test_refit_retrains_the_selected_epoch_count_on_train_and_valid_items(
        split: LeaveOneOutSplit, trained: Checkpoint) -> None:
    selected = Checkpoint(trained.config, trained.vocab, trained.state_dict,
                          trained.history, {**trained.meta, "best_epoch": 2})
    final = refit(split, selected, device="cpu")
    assert final.meta["refit"] is True
    assert final.meta["refit_epochs"] == 2
    assert len(final.meta["refit_history"]) == 2
    assert not torch.equal(final.recommender().score(HISTORIES),
                           trained.recommender().score(HISTORIES))


def write_seq_file(path: Path, split_seed: int = 1) -> Path:
    rng = np.random.default_rng(split_seed)
    lines = []
    for u in range(1, 151):
        item, step = int(rng.integers(0, N_ITEMS)), 1 + u % 2
        for _ in range(int(rng.integers(4, 9))):
            lines.append(f"{u} {item % N_ITEMS + 1}")
            item += step
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_main_writes_checkpoint_metrics_and_curves(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         ) -> None:
    data = write_seq_file(tmp_path / "seq.txt")
    overrides = {k: v for k, v in TINY.to_dict().items() if k != "seed"}
    overrides["max_epochs"] = 3
    code = train_main(str(data), "seq", time_budget=60, out=str(tmp_path / "run"),
                      overrides=overrides, eval_reserve=10, progress=False)
    assert code == 0
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for stage in ("valid", "test"):
        for protocol in ("sampled", "full"):
            assert 0.0 <= report[stage][protocol]["ndcg@10"] <= report[stage][protocol]["hr@10"]
    assert report["device"] == "cpu"
    assert report["hyperparameters"]["max_epochs"] == 3
    assert len(report["history"]) == 3
    assert (tmp_path / "run" / "learning_curves.png").stat().st_size > 0
    assert "sasrec" in capsys.readouterr().out
    # the checkpoint evaluates through evaluate_main with identical test numbers
    out_json = tmp_path / "eval.json"
    assert evaluate_main(str(data), "seq", "sasrec", str(tmp_path / "run" / "checkpoint"),
                         str(out_json)) == 0
    again = json.loads(out_json.read_text())
    assert again["test"]["full"]["hr@10"] == pytest.approx(report["test"]["full"]["hr@10"])
    # the hybrid is chosen on validation among pairs that include the model alone
    hybrid_json = tmp_path / "hybrid.json"
    assert evaluate_main(str(data), "seq", "hybrid", str(tmp_path / "run" / "checkpoint"),
                         str(hybrid_json)) == 0
    hybrid = json.loads(hybrid_json.read_text())
    chosen = hybrid["hybrid"]
    assert chosen["selected_on"] == "valid full ndcg@10" and chosen["weight"] >= 0.0
    assert hybrid["valid"]["full"]["ndcg@10"] >= again["valid"]["full"]["ndcg@10"] - 1e-9
    assert "weight" in capsys.readouterr().out


def test_evaluate_main_baselines_and_errors(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = write_seq_file(tmp_path / "seq.txt")
    assert evaluate_main(str(data), "seq", "markov", None, str(tmp_path / "m.json")) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert set(result["test"]) == {"sampled", "full"}
    assert evaluate_main(str(data), "seq", "sasrec", None, str(tmp_path / "x.json")) == 2
    assert evaluate_main(str(data), "seq", "nope", None, str(tmp_path / "x.json")) == 2
    assert evaluate_main(str(tmp_path / "missing.txt"), "seq", "popularity", None,
                         str(tmp_path / "x.json")) == 2
    assert "missing.txt" in capsys.readouterr().err


class ScriptedEvaluator:
    """Stands in for the validation evaluator: returns scripted NDCG@10 values."""

    def __init__(self, values: list[float], users: int = 5000) -> None:
        self.values = iter(values)
        self.users = list(range(users))
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def evaluate_protocols(self, model: SASRecRecommender, stage: str,
                           protocols: tuple[str, ...],
                           shard: tuple[int, int] = (0, 1)) -> dict[str, dict[str, float]]:
        assert stage == "valid"  # never the test split
        assert shard == (0, 1)  # one process: all the users
        assert set(protocols) == {"sampled", "full"}
        self.snapshots.append({k: v.clone() for k, v in model.model.state_dict().items()})
        value = next(self.values)  # scripted on the full protocol, the selected one
        return {"sampled": {"hr@10": 0.5, "ndcg@10": 0.5},
                "full": {"hr@10": value, "ndcg@10": value}}


def test_early_stopping_keeps_the_best_validation_epoch(split: LeaveOneOutSplit) -> None:
    config = SASRecConfig(**{**TINY.to_dict(), "patience": 3, "max_epochs": 20})
    scripted = ScriptedEvaluator([0.1, 0.3, 0.2, 0.25, 0.29, 0.9])
    ckpt = train(split, config, device="cpu", evaluator=scripted)  # type: ignore[arg-type]
    assert [r["valid_full_ndcg@10"] for r in ckpt.history] == [0.1, 0.3, 0.2, 0.25, 0.29]
    assert ckpt.meta["best_epoch"] == 2
    assert ckpt.meta["best_valid"] == 0.3
    best = scripted.snapshots[1]
    assert all(torch.equal(ckpt.state_dict[k], best[k]) for k in best)
    assert not torch.equal(ckpt.state_dict["item_emb.weight"],
                           scripted.snapshots[-1]["item_emb.weight"])


@pytest.mark.parametrize("norm,blocks", [("pre", 2), ("post", 2), ("pre", 1)])
def test_last_position_encoding_equals_the_full_encoders_last_state(norm: str,
                                                                   blocks: int) -> None:
    """Serving encodes only the last position in the last block: same user vectors."""
    torch.manual_seed(3)
    model = SASRec(30, SASRecConfig(max_len=8, hidden=16, n_heads=2, n_blocks=blocks,
                                    norm=norm, dropout=0.0)).eval()
    seqs = pad_histories([[3], [1, 2, 3, 4, 5, 6, 7, 8, 9], [4, 4, 2], [29, 1]], 8)
    with torch.inference_mode():
        full = model.encode(seqs)[:, -1]
        last = model.encode_last(seqs)
    assert last.shape == (4, 16)
    assert torch.allclose(last, full, atol=1e-5)
    assert not torch.allclose(last[0], last[3])  # the rows are really different users


def test_last_position_encoding_of_histories_shorter_than_max_len() -> None:
    """A batch narrower than max_len: its last column is still position max_len - 1 (the
    encoder embeds only the real positions, and must place them as the full encoder does),
    also with the shapes rounded up (21 users, 61 positions: filler rows and positions)."""
    torch.manual_seed(8)
    model = SASRec(30, SASRecConfig(max_len=20, hidden=16, n_heads=2, dropout=0.0)).eval()
    gen = torch.Generator().manual_seed(9)
    histories = [torch.randint(1, 31, (1 + i % 5,), generator=gen).tolist()
                 for i in range(21)]
    seqs = pad_histories(histories, 20)
    assert seqs.shape == (21, 5) and int((seqs != 0).sum()) == 61
    assert shape_bucket(21) > 21 and shape_bucket(61) > 61
    with torch.inference_mode():
        full = model.encode(seqs)[:, -1]
        last = model.encode_last(seqs)
        bucketed = model.encode_last(seqs, bucketed=True)
    assert torch.allclose(last, full, atol=1e-5)
    assert torch.allclose(bucketed, full, atol=1e-5)


def test_bucketed_shapes_give_the_same_user_vectors() -> None:
    """The worker rounds the encoder's shapes up (filler rows and positions, dropped after):
    every user's vector is what the unrounded encoder gives, whatever the batch."""
    torch.manual_seed(5)
    model = SASRec(40, SASRecConfig(max_len=12, hidden=16, n_heads=2, dropout=0.0)).eval()
    gen = torch.Generator().manual_seed(6)
    for users in (1, 3, 17, 18, 40):
        lengths = torch.randint(1, 13, (users,), generator=gen).tolist()
        seqs = pad_histories([torch.randint(1, 41, (n,), generator=gen).tolist()
                              for n in lengths], 12)
        assert shape_bucket(users) >= users and shape_bucket(sum(lengths)) >= sum(lengths)
        with torch.inference_mode():
            plain = model.encode_last(seqs)
            bucketed = model.encode_last(seqs, bucketed=True)
        assert bucketed.shape == (users, 16)
        assert torch.allclose(bucketed, plain, atol=1e-5)


def test_shape_buckets_are_few_and_close_above_the_size() -> None:
    sizes = range(1, 20_001)
    buckets = {shape_bucket(n) for n in sizes}
    assert len(buckets) <= 100  # every batch of up to 20,000 positions: few kernels
    assert all(n <= shape_bucket(n) <= n * 1.125 for n in sizes)
    assert [shape_bucket(n) for n in (1, 5, 16, 17, 19, 33)] == [1, 5, 16, 18, 20, 36]


def test_a_small_validation_waits_longer_before_decaying_and_stopping(
        split: LeaveOneOutSplit) -> None:
    # 1,000 users against patience_users 5,000: each evaluation counts as a fifth, so 3
    # stale evaluations (which stop a 5,000-user run) do not stop it; 15 do
    config = SASRecConfig(**{**TINY.to_dict(), "patience": 3, "max_epochs": 30,
                             "plateau_decay": 0.5})
    values = [0.3] + [0.1] * 20
    small = train(split, config, device="cpu",
                  evaluator=ScriptedEvaluator(values, users=1000))  # type: ignore[arg-type]
    assert len(small.history) == 1 + 15, "stopped after patience x 5 stale evaluations"
    assert small.meta["patience_evaluations"] == 15
    large = train(split, config, device="cpu",
                  evaluator=ScriptedEvaluator(values, users=5000))  # type: ignore[arg-type]
    assert len(large.history) == 1 + 3


def test_patience_factor_rounds_up_and_never_goes_below_one() -> None:
    assert patience_factor(5000, 943) == 6
    assert patience_factor(5000, 5000) == 1
    assert patience_factor(5000, 10_000) == 1
    assert patience_factor(5000, 0) == 5000
