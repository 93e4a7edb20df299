"""Model versions as blobs (safetensors + JSON) and the online model's user vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recmodels.checkpoint import Checkpoint
from recmodels.online import OnlineModel, encoder_dtype
from recmodels.sasrec import SASRec, SASRecConfig, pad_histories
from recmodels.split import ItemVocab
from streamrec.state.model_holder import online_model
from streamrec.state.model_store import ModelStoreError, from_blobs, to_blobs


def _checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    config = SASRecConfig(hidden=8, max_len=5, n_blocks=1)
    vocab = ItemVocab(["a", "b", "c", "d"])
    model = SASRec(vocab.n_items, config)
    return Checkpoint(config, vocab, model.state_dict())


def test_blobs_round_trip_gives_the_same_model() -> None:
    checkpoint = _checkpoint()
    weights, meta = to_blobs(checkpoint, "sasrec-0007", {"ndcg@10": 0.5}, 123)
    back = from_blobs(weights, meta, "sr:model:sasrec-0007:meta")
    assert (back.version, back.created_at_ms, back.metrics) == ("sasrec-0007", 123,
                                                                {"ndcg@10": 0.5})
    assert back.checkpoint.vocab == checkpoint.vocab
    seqs = pad_histories([[1, 2], [3]], 5)
    with torch.inference_mode():
        assert torch.equal(checkpoint.model().encode(seqs), back.checkpoint.model().encode(seqs))


def test_unreadable_blobs_name_the_key() -> None:
    with pytest.raises(ModelStoreError, match="sr:model:x:meta"):
        from_blobs(b"garbage", b"{}", "sr:model:x:meta")


def test_online_user_vectors_map_redis_indexes_and_skip_unknown_items() -> None:
    published = from_blobs(*to_blobs(_checkpoint(), "v1", {}, 0), where="k")
    online = online_model(published)
    assert online.item_vectors.shape == (4, 8)
    vectors = online.user_vectors([[0, 1], [0, 1, 99], [], [99]])
    with torch.inference_mode():
        expected = online.model.encode(pad_histories([[1, 2]], 5))[:, -1, :].numpy()
    np.testing.assert_allclose(vectors[0], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vectors[1], expected[0], rtol=1e-5, atol=1e-6)
    assert not vectors[2].any() and not vectors[3].any()


def test_user_vectors_of_a_batch_equal_each_users_own_encoding(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Sequences are encoded in chunks of similar lengths; each row keeps its own vector."""
    monkeypatch.setattr("recmodels.online.USER_BATCH", 2)
    online = online_model(from_blobs(*to_blobs(_checkpoint(), "v1", {}, 0),
                                                   where="k"))
    sequences = [[0, 1, 2, 3, 0, 1], [2], [], [3, 1], [0, 2, 1], [1]]
    vectors = online.user_vectors(sequences)
    for row, seq in enumerate(sequences):
        alone = online.user_vectors([seq])[0]
        np.testing.assert_allclose(vectors[row], alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(vectors[1], vectors[5])


def test_an_unloadable_version_is_kept_out_and_reported_once(caplog) -> None:
    import asyncio
    import logging

    from streamrec.state.model_holder import ModelHolder

    class Store:
        loads = 0

        async def current_version(self) -> str:
            return "broken-1"

        async def load(self, version: str):
            Store.loads += 1
            return from_blobs(b"garbage", b"{}", f"sr:model:{version}:meta")

    holder = ModelHolder(Store())  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            assert asyncio.run(holder.refresh()) is False
    assert holder.current is None
    assert Store.loads == 1
    assert sum("broken-1" in r.message for r in caplog.records) == 1


def test_encoder_precision_names_a_dtype_and_rejects_others() -> None:
    assert encoder_dtype("float32") == torch.float32
    assert encoder_dtype("bfloat16") == torch.bfloat16
    assert encoder_dtype("auto") in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="'half'"):
        encoder_dtype("half")


def test_bfloat16_user_vectors_point_where_float32_ones_do() -> None:
    """Products in bfloat16 (layer norms and softmax in float32): each user's vector keeps
    its direction, so the items it ranks first stay the same."""
    torch.manual_seed(3)
    config = SASRecConfig(hidden=64, max_len=20, n_blocks=2)
    model = SASRec(300, config).eval()
    vectors = model.item_emb.weight.detach()[1:].numpy().copy()
    rng = np.random.default_rng(5)
    sequences = [rng.integers(0, 300, size=n).tolist() for n in rng.integers(1, 21, size=40)]
    exact = OnlineModel("v", model, vectors, 0, None).user_vectors(sequences)
    low = OnlineModel("v", model, vectors, 0, None,
                      encoder_dtype=torch.bfloat16).user_vectors(sequences)
    assert low.dtype == np.float32
    assert not np.array_equal(low, exact)  # the products did run in bfloat16
    cosine = (low * exact).sum(1) / np.linalg.norm(low, axis=1) / np.linalg.norm(exact, axis=1)
    assert cosine.min() > 0.999
    top = [set(np.argsort(-(vectors @ v))[:10].tolist()) for v in (*exact, *low)]
    overlap = [len(top[i] & top[i + len(exact)]) / 10 for i in range(len(exact))]
    assert np.mean(overlap) >= 0.9


def test_small_chunks_are_encoded_in_float32_whatever_the_precision() -> None:
    """Autocast's fixed cost exceeds what bfloat16 saves on a few short sequences."""
    from recmodels.online import LOW_PRECISION_MIN_POSITIONS

    torch.manual_seed(4)
    model = SASRec(50, SASRecConfig(hidden=16, max_len=8, n_blocks=1)).eval()
    vectors = model.item_emb.weight.detach()[1:].numpy().copy()
    few = [[1, 2, 3], [4, 5], [7]]
    assert sum(map(len, few)) < LOW_PRECISION_MIN_POSITIONS
    exact = OnlineModel("v", model, vectors, 0, None).user_vectors(few)
    low = OnlineModel("v", model, vectors, 0, None,
                      encoder_dtype=torch.bfloat16).user_vectors(few)
    np.testing.assert_array_equal(low, exact)
