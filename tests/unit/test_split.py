"""Leave-one-out split and item vocabulary."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recmodels.split import PAD, ItemVocab, leave_one_out
from streamrec.kernel.errors import DataError


def test_last_item_is_test_second_to_last_is_valid_rest_is_training() -> None:
    split = leave_one_out({"u1": ["10", "11", "12", "13"], "u2": ["12", "10", "11"]})
    v = split.vocab
    u1, u2 = split.users.index("u1"), split.users.index("u2")
    assert split.train[u1] == (v.index("10"), v.index("11"))
    assert split.valid[u1] == v.index("12")
    assert split.test[u1] == v.index("13")
    assert split.train[u2] == (v.index("12"),)
    assert split.valid[u2] == v.index("10")
    assert split.test[u2] == v.index("11")
    assert split.eval_users == (u1, u2)


def test_users_with_fewer_than_three_items_are_training_only() -> None:
    split = leave_one_out({"short": ["1", "2"], "single": ["3"], "long": ["1", "2", "3"]})
    short, single = split.users.index("short"), split.users.index("single")
    assert split.train[short] == (1, 2)
    assert split.train[single] == (3,)
    assert split.valid[short] == split.test[short] == PAD
    assert split.eval_users == (split.users.index("long"),)
    # training-only users still contribute their items to training
    assert [1, 2] in split.training_sequences("valid")


def test_histories_per_stage_never_contain_their_target() -> None:
    split = leave_one_out({"u": ["1", "2", "3", "4", "5"]})
    assert split.history(0, "valid") == [1, 2, 3]
    assert split.target(0, "valid") == 4
    assert split.history(0, "test") == [1, 2, 3, 4]
    assert split.target(0, "test") == 5
    assert split.interacted(0) == {1, 2, 3, 4, 5}
    assert split.training_sequences("valid") == [[1, 2, 3]]
    assert split.training_sequences("test") == [[1, 2, 3, 4]]


def test_vocab_is_dense_from_one_numeric_ids_in_numeric_order() -> None:
    vocab = ItemVocab.from_sequences({"a": ["10", "9", "x"], "b": ["100", "9"]})
    assert vocab.items == ("9", "10", "100", "x")
    assert [vocab.index(i) for i in vocab.items] == [1, 2, 3, 4]
    assert vocab.n_items == 4
    with pytest.raises(DataError, match="unknown item id 'nope'"):
        vocab.index("nope")


def test_split_with_a_given_vocab_uses_its_indices() -> None:
    vocab = ItemVocab(["z", "y", "x"])
    split = leave_one_out({"u": ["x", "y", "z"]}, vocab)
    assert split.train[0] == (3,)
    assert (split.valid[0], split.test[0]) == (2, 1)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text("abc", min_size=1, max_size=3),
                       st.lists(st.integers(1, 30).map(str), min_size=1, max_size=12),
                       min_size=1, max_size=12))
def test_split_partitions_every_sequence_exactly(seqs: dict[str, list[str]]) -> None:
    split = leave_one_out(seqs)
    for pos, user in enumerate(split.users):
        original = split.vocab.encode(seqs[user])
        if len(original) >= 3:
            assert pos in split.eval_users
            rebuilt = [*split.train[pos], split.valid[pos], split.test[pos]]
        else:
            assert pos not in split.eval_users
            rebuilt = list(split.train[pos])
        assert rebuilt == original
        assert PAD not in rebuilt
