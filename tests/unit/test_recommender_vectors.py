"""Which user vectors serving uses and stores: the state step's fresh ones (role all), the
stored ones of the same model version, or ones recomputed from the sequence."""

from __future__ import annotations

import numpy as np
import torch

from recmodels.checkpoint import Checkpoint
from recmodels.online import FreshVectors, OnlineModel
from recmodels.sasrec import SASRec, SASRecConfig
from recmodels.scoring.ranking import UserState
from recmodels.split import ItemVocab
from serving.recommender import _user_vectors


def _model(version: str = "v2") -> OnlineModel:
    torch.manual_seed(0)
    config = SASRecConfig(hidden=8, max_len=5, n_blocks=1)
    vocab = ItemVocab(["a", "b", "c", "d"])
    return OnlineModel.from_checkpoint(Checkpoint(config, vocab, SASRec(4, config).state_dict()),
                                       version)


STALE = np.full(8, 9.0, dtype=np.float32)  # a stored vector that no sequence gives


def test_without_fresh_vectors_stored_ones_of_this_version_are_used_and_nothing_stored() -> None:
    model = _model()
    users = [UserState("kept", [0, 1], vector=STALE, vector_version="v2"),
             UserState("old", [0, 1], vector=STALE, vector_version="v1"),
             UserState("none", [2])]
    vectors, store = _user_vectors(users, model, None)
    np.testing.assert_array_equal(vectors[0], STALE)
    np.testing.assert_allclose(vectors[1], model.user_vectors([[0, 1]])[0], rtol=1e-5)
    np.testing.assert_allclose(vectors[2], model.user_vectors([[2]])[0], rtol=1e-5)
    assert store is None


def test_after_a_state_step_fresh_vectors_are_used_and_the_others_recomputed() -> None:
    """A user the state step did not change (an event delivered again after a crash) may
    have a stored vector older than its sequence: recomputed, and stored with the rest."""
    model = _model()
    mine = np.arange(8, dtype=np.float32)
    users = [UserState("changed", [0, 1], vector=STALE, vector_version="v2"),
             UserState("redelivered", [3, 2], vector=STALE, vector_version="v2")]
    vectors, store = _user_vectors(users, model, FreshVectors("v2", {"changed": mine}))
    np.testing.assert_array_equal(vectors[0], mine)
    expected = model.user_vectors([[3, 2]])[0]
    np.testing.assert_allclose(vectors[1], expected, rtol=1e-5)
    assert store is not None and store.version == "v2"
    assert set(store.by_user) == {"changed", "redelivered"}
    np.testing.assert_allclose(store.by_user["redelivered"], expected, rtol=1e-5)


def test_fresh_vectors_of_a_version_swapped_out_meanwhile_are_recomputed() -> None:
    model = _model("v3")
    users = [UserState("changed", [0, 1])]
    vectors, store = _user_vectors(users, model, FreshVectors("v2", {"changed": STALE}))
    np.testing.assert_allclose(vectors[0], model.user_vectors([[0, 1]])[0], rtol=1e-5)
    assert store is not None and store.version == "v3"
    assert not np.array_equal(store.by_user["changed"], STALE)
