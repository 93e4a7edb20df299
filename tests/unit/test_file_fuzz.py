"""Malformed files for every reader: random edits of each layout's fixture (bytes inserted,
deleted, replaced: NULs, invalid UTF-8, stray quotes and separators, cut lines), deeply
nested and oversized JSON. A reader either gives events and reports the bad rows, or stops
with a DataError naming the file; nothing else escapes. And the command line says so in
one line, without a traceback."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recmodels.adapters import PRESETS, BadRows, Layout, interactions, make_layout
from streamrec.kernel.errors import DataError
from tests.conftest import ROOT
from tests.unit.test_adapters import FIXTURES, LAYOUTS

NOISE = [b"\x00", b"\xff\xfe", b"\xc3", b'"', b",", b"\t", b"\n", b"\r\n", b"{", b"}", b"[",
         b":", b"\\", b"nan", b"-1", b"99999999999999999999999", b"\xe2\x80\xae", b" UTC"]

FORMATS: list[tuple[str, str | Layout]] = [
    *((FIXTURES[p][0], PRESETS[p]) for p in sorted(FIXTURES)),
    ("ecommerce.csv", make_layout("csv", columns="user=user_id,item=product_id,"
                                                 "type=event_type,ts=event_time",
                                  types="cart=click,remove_from_cart=skip")),
    ("ratings.inter", "ml100k"),
    ("ratings.inter", "seq"),
]


@st.composite
def edits(draw: st.DrawFn, size: int) -> list[tuple[int, int, bytes]]:
    """(position, bytes removed, bytes inserted) edits of a file of ``size`` bytes."""
    return draw(st.lists(st.tuples(st.integers(0, size), st.integers(0, 40),
                                   st.sampled_from(NOISE) | st.binary(max_size=8)),
                         min_size=1, max_size=12))


def _mutated(data: bytes, changes: list[tuple[int, int, bytes]]) -> bytes:
    for position, cut, put in changes:
        at = min(position, len(data))
        data = data[:at] + put + data[at + cut:]
    return data


def _read_all(path: Path, fmt: str | Layout) -> None:
    bad = BadRows()
    try:
        for event in interactions(path, fmt, bad):
            assert event.user_id and event.item_id and event.type in ("view", "click",
                                                                        "purchase")
    except DataError as err:
        assert str(path) in str(err) or path.name in str(err), str(err)


@pytest.mark.parametrize(("name", "fmt"), FORMATS,
                         ids=[f"{n}-{f if isinstance(f, str) else f.kind}" for n, f in FORMATS])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_mangled_file_gives_events_and_bad_rows_or_one_clear_error(
        name: str, fmt: str | Layout, data: st.DataObject) -> None:
    original = (LAYOUTS / name).read_bytes()
    mangled = _mutated(original, data.draw(edits(len(original))))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(mangled)
        _read_all(path, fmt)


def test_deep_and_oversized_json_lines_are_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    deep = b"[" * 5000 + b"]" * 5000
    huge = (b'{"session": "' + b"x" * 200_000
            + b'", "events": [{"aid": 1, "ts": 1, "type": "clicks"}]}')
    good = b'{"session": 1, "events": [{"aid": 1, "ts": 1600000000000, "type": "clicks"}]}'
    path.write_bytes(b"\n".join([deep, huge, good]) + b"\n")
    bad = BadRows()
    events = list(interactions(path, PRESETS["sessions"], bad))
    assert len(events) == 1
    assert [where for where, _ in bad.first] == ["line 1", "line 2 event 0"]
    assert "longer than 128 bytes" in bad.first[1][1]


def test_a_parquet_file_with_wrong_types_and_a_truncated_one(tmp_path: Path) -> None:
    def read(table: pa.Table) -> list[str]:
        path = tmp_path / "e.parquet"
        pq.write_table(table, path)
        bad = BadRows()
        assert list(interactions(path, make_layout("parquet"), bad)) == []
        return [reason for _, reason in bad.first]

    assert read(pa.table({"user_id": ["u"], "item_id": [[1, 2]], "type": ["view"],
                          "ts": [1]})) == ["item (column 'item_id'): expected a text or a "
                                           "number, got list"]
    assert read(pa.table({"user_id": [None, "u"], "item_id": ["i", "i"],
                          "type": ["view", "view"], "ts": [1, 2**62]})) == [
        "user (column 'user_id'): must not be empty",
        "timestamp '4611686018427387904' is out of range"]
    assert read(pa.table({"user_id": ["u"], "item_id": ["i"], "type": [True], "ts": [1]})) \
        == ["type (column 'type'): expected a text or a number, got bool"]
    path = tmp_path / "e.parquet"
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="not a Parquet file"):
        list(interactions(cut, make_layout("parquet"), BadRows()))


@pytest.mark.parametrize("argv", [
    ["--preset", "ecommerce"], ["--format", "jsonl", "--columns", "user=session"],
    ["--format", "parquet"], ["--format", "ml100k"]])
def test_the_command_line_says_what_is_wrong_without_a_traceback(
        tmp_path: Path, argv: list[str]) -> None:
    path = tmp_path / "broken.bin"
    path.write_bytes(b"\xff\xfe\x00garbage\nmore,garbage\n")
    done = subprocess.run([sys.executable, "-m", "streamrec.app.cli", "evaluate", "--data",
                           str(path), *argv, "--model", "markov", "--json-out",
                           str(tmp_path / "o.json")], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "broken.bin" in done.stderr, done.stderr
