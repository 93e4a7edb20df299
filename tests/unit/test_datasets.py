"""Data set readers and the synthetic stream."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from recmodels.datasets import (
    ml100k_type,
    read_ml100k,
    read_seq_stream,
    read_sequences,
    read_titles,
    synthetic_stream,
)
from streamrec.kernel.errors import DataError


def test_ml100k_is_sorted_by_time_with_the_documented_type_rule(tmp_path: Path) -> None:
    path = tmp_path / "r.inter"
    path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                    "2\t10\t5\t300\n1\t11\t4\t100\n1\t12\t2\t200\n")
    events = read_ml100k(path)
    assert [(e.user_id, e.item_id, e.type, e.ts) for e in events] == [
        ("1", "11", "click", 100_000), ("1", "12", "view", 200_000),
        ("2", "10", "purchase", 300_000)]
    assert [ml100k_type(r) for r in (1, 3, 4, 5)] == ["view", "view", "click", "purchase"]


def test_grouplens_u_data_layout_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("1\t5\t3\t881250949\n")
    assert read_ml100k(path)[0].ts == 881250949000


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.inter"
    path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\n")
    with pytest.raises(DataError, match=r"r.inter: line 2"):
        read_ml100k(path)


def test_seq_stream_keeps_each_users_order(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("1 a\n1 b\n1 c\n2 x\n2 y\n")
    events = read_seq_stream(path, seed=3)
    assert [e.item_id for e in events if e.user_id == "1"] == ["a", "b", "c"]
    assert [e.item_id for e in events if e.user_id == "2"] == ["x", "y"]
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert len({e.event_id for e in events}) == 5


def test_one_line_per_user_reads_as_the_same_sequences(tmp_path: Path) -> None:
    """The S3-Rec layout (``user item item ...``) gives what ``user item`` lines give."""
    per_user, per_event = tmp_path / "u.txt", tmp_path / "e.txt"
    per_user.write_text("1 a b c\n2 x\n3 y z\n")
    per_event.write_text("1 a\n1 b\n1 c\n2 x\n3 y\n3 z\n")
    assert read_sequences(per_user) == read_sequences(per_event) == {
        "1": ["a", "b", "c"], "2": ["x"], "3": ["y", "z"]}
    per_user.write_text("1 a b\n7\n")
    with pytest.raises(DataError, match=r"u.txt: line 2: expected 'user item \[item"):
        read_sequences(per_user)


def test_synthetic_stream_is_seeded_and_has_funnels() -> None:
    a = list(synthetic_stream(2000, seed=1))
    assert a == list(synthetic_stream(2000, seed=1))
    assert a != list(synthetic_stream(2000, seed=2))
    kinds = {e.type for e in a}
    assert kinds == {"view", "click", "purchase"}
    for prev, cur in itertools.pairwise(a):
        if cur.type == "purchase":
            assert (prev.type, prev.item_id, prev.user_id) == ("click", cur.item_id, cur.user_id)


def test_titles_from_both_layouts(tmp_path: Path) -> None:
    recbole = tmp_path / "ml.item"
    recbole.write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\n"
                       "1\tToy Story\t1995\n")
    grouplens = tmp_path / "u.item"
    grouplens.write_bytes("1|Toy Story (1995)|01-Jan-1995||http://x|0\n2|Café (1990)|x\n"
                          .encode("latin-1"))
    assert read_titles(recbole) == {"1": "Toy Story (1995)"}
    assert read_titles(grouplens) == {"1": "Toy Story (1995)", "2": "Café (1990)"}
