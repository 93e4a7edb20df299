"""Your own data files: presets for the common public layouts, column and type maps,
timestamps, and every bad row reported with its line and reason."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa  # the parquet extra, part of dev
import pyarrow.parquet as pq
import pytest

from recmodels.adapters import (
    PRESETS,
    BadRows,
    Layout,
    RowError,
    make_layout,
    parse_timestamp,
    read_interactions,
    timeline,
    user_sequences,
)
from recmodels.datasets import Interaction
from streamrec.kernel.errors import DataError

LAYOUTS = Path(__file__).resolve().parents[1] / "fixtures" / "layouts"
# the fixtures hold the same 320 events (232 views, 69 clicks, 19 purchases of 28 users)
# in each layout, with bad rows at these lines (sessions: line, event in the line)
FIXTURES = {
    "ecommerce": ("ecommerce.csv", {94: "user", 155: "yesterday", 206: "wishlist",
                                    257: "6 fields, the header has 9"}),
    "retailrocket": ("retailrocket.csv", {73: "14x33", 184: "refund"}),
    "sessions": ("sessions.jsonl", {"line 4 event 2": "item", "line 8 event 1": "views",
                                    12: "not JSON"}),
    "recbole": ("ratings.inter", {123: "missing timestamp", 224: "2 fields"}),
}
TYPES = Counter(view=232, click=69, purchase=19)


def _read(preset: str) -> tuple[list[Interaction], BadRows]:
    name, _ = FIXTURES[preset]
    bad = BadRows()
    events = list(read_interactions(LAYOUTS / name, PRESETS[preset], bad))
    return events, bad


@pytest.mark.parametrize("preset", sorted(FIXTURES))
def test_every_valid_row_is_one_event_and_every_bad_row_is_reported(preset: str) -> None:
    events, bad = _read(preset)
    assert len(events) == 320
    assert Counter(e.type for e in events) == (TYPES if preset != "recbole"
                                               else Counter(view=320))
    assert len({e.user_id for e in events}) == 28
    assert len({e.event_id for e in events}) == 320, "stable, distinct event ids"
    expected = FIXTURES[preset][1]
    assert bad.count == len(expected)
    for (where, reason), (line, words) in zip(bad.first, expected.items(), strict=True):
        assert where == (line if isinstance(line, str) else f"line {line}")
        assert words in reason, reason
    report = bad.report("f")
    assert f"{len(expected)} bad row(s)" in report
    # each event keeps its file's order and time (ISO seconds, epoch ms or s)
    assert all(e.ts >= 1_600_000_000_000 for e in events)


def test_a_type_mapped_to_skip_is_counted_not_dropped() -> None:
    _, bad = _read("ecommerce")
    assert bad.skipped == Counter(remove_from_cart=2)
    assert "rows skipped by the type map: remove_from_cart 2" in bad.report("f")


def test_the_ecommerce_preset_reads_iso_times_with_a_zone_and_sessions() -> None:
    events, _ = _read("ecommerce")
    first = events[0]
    assert first == Interaction("ecommerce.csv:2", "5014", "1027", "view",
                                int(datetime(2020, 9, 13, 12, 26, 41, tzinfo=UTC)
                                    .timestamp() * 1000), session_id="s-14-444444")
    assert events[1].type == "click"  # cart


def test_session_files_give_one_event_per_entry_with_the_session_as_user() -> None:
    events, _ = _read("sessions")
    assert events[0] == Interaction("sessions.jsonl:1:0", "0", "0", "view", 1600000049949,
                                    session_id="0")
    assert {e.type for e in events if e.event_id.startswith("sessions.jsonl:2:")} == {
        "view", "click", "purchase"}


@pytest.mark.parametrize(("value", "unit", "ms"), [
    (1_600_000_000, "auto", 1_600_000_000_000),
    ("1600000000", "auto", 1_600_000_000_000),
    ("1600000000123", "auto", 1_600_000_000_123),
    ("1600000000.5", "s", 1_600_000_000_500),
    ("1600000000123", "ms", 1_600_000_000_123),
    (1_600_000_000_123.0, "auto", 1_600_000_000_123),
    ("2020-09-13T12:26:40Z", "auto", 1_600_000_000_000),
    ("2020-09-13 14:26:40+02:00", "iso", 1_600_000_000_000),
    ("2020-09-13 12:26:40 UTC", "iso", 1_600_000_000_000),
    ("2020-09-13T12:26:40", "auto", 1_600_000_000_000),  # no zone: UTC
    (datetime(2020, 9, 13, 14, 26, 40, tzinfo=timezone(timedelta(hours=2))), "auto",
     1_600_000_000_000),
])
def test_timestamps_in_seconds_milliseconds_and_iso_with_zones(value: object, unit: str,
                                                               ms: int) -> None:
    assert parse_timestamp(value, unit) == ms  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "unit", "words"), [
    ("", "auto", "missing"), (None, "auto", "missing"), ("soon", "auto", "not ISO-8601"),
    ("soon", "s", "not a number of seconds"), ("12", "iso", "not ISO-8601"),
    (12, "iso", "is a number"), ("-5", "auto", "not a time"), ("nan", "auto", "not a time"),
    (True, "auto", "not a time"), ("1e300", "ms", "out of range"),
])
def test_bad_timestamps_say_why(value: object, unit: str, words: str) -> None:
    with pytest.raises(RowError, match=words):
        parse_timestamp(value, unit)  # type: ignore[arg-type]


def test_a_bare_csv_reads_default_columns_and_column_maps_override_them(
        tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("who,what,ts,kind\nu1,i1,1600000000,VIEW\nu1,i2,1600000001,Click\n"
                    "u2,i1,1600000002,purchase\n")
    layout = make_layout("csv", columns="user=who,item=what,type=kind")
    events = list(read_interactions(path, layout, BadRows()))
    assert [(e.user_id, e.item_id, e.type, e.ts) for e in events] == [
        ("u1", "i1", "view", 1600000000000), ("u1", "i2", "click", 1600000001000),
        ("u2", "i1", "purchase", 1600000002000)]
    no_type = make_layout("csv", columns="user=who,item=what,type=")
    assert {e.type for e in read_interactions(path, no_type, BadRows())} == {"view"}
    with pytest.raises(DataError, match="no column 'user_id' for user"):
        list(read_interactions(path, make_layout("csv"), BadRows()))


def test_layout_mistakes_are_named() -> None:
    with pytest.raises(DataError, match="unknown field"):
        make_layout("csv", columns="customer=c")
    with pytest.raises(DataError, match="--columns: 'user'"):
        make_layout("csv", columns="user")
    with pytest.raises(DataError, match="no column for user"):
        make_layout("csv", columns="user=")
    with pytest.raises(DataError, match="cart=basket: expected view, click"):
        make_layout("csv", types="cart=basket")
    with pytest.raises(DataError, match="preset 'ecommerce' reads csv files, not jsonl"):
        make_layout("jsonl", preset="ecommerce")
    with pytest.raises(DataError, match="preset 'nope'"):
        make_layout(None, preset="nope")
    assert make_layout(None, preset="retailrocket", types="view=skip").types["view"] == "skip"


def test_ids_are_checked_by_the_ingest_rules_and_files_must_be_utf8(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,type,ts\n" + "u" * 200 + ",i,view,1\nu,\x01i,view,2\n")
    bad = BadRows()
    assert list(read_interactions(path, make_layout("csv"), bad)) == []
    assert [w for w, _ in bad.first] == ["line 2", "line 3"]
    assert "longer than 128 bytes" in bad.first[0][1]
    assert "control character" in bad.first[1][1]
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"user_id,item_id,type,ts\nu,caf\xe9,view,1\n")
    with pytest.raises(DataError, match="line 2: not UTF-8"):
        list(read_interactions(latin, make_layout("csv"), BadRows()))
    with pytest.raises(DataError, match="cannot read"):
        list(read_interactions(tmp_path / "missing.csv", make_layout("csv"), BadRows()))


def test_parquet_files_with_timestamp_columns(tmp_path: Path) -> None:
    moments = [datetime(2020, 9, 13, 12, 26, 40 + k, tzinfo=UTC) for k in range(3)]
    table = pa.table({"user_id": [1, 1, 2], "item_id": ["a", "b", ""],
                      "type": ["view", "click", "view"],
                      "ts": pa.array(moments, pa.timestamp("ms", tz="UTC"))})
    path = tmp_path / "events.parquet"
    pq.write_table(table, path, row_group_size=2)
    bad = BadRows()
    events = list(read_interactions(path, make_layout("parquet"), bad))
    assert [(e.user_id, e.item_id, e.type, e.ts) for e in events] == [
        ("1", "a", "view", 1600000000000), ("1", "b", "click", 1600000001000)]
    assert bad.first == [("row 3", "item (column 'item_id'): must not be empty")]
    with pytest.raises(DataError, match="not a Parquet file"):
        list(read_interactions(LAYOUTS / "ecommerce.csv", make_layout("parquet"), BadRows()))


def test_training_sequences_are_in_time_order_with_repeats_collapsed(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    # u1: b (view, then its click at the same time), a earlier in time but later in the file
    path.write_text("user_id,item_id,type,ts\nu1,b,view,20\nu1,b,click,20\nu1,a,view,10\n"
                    "u1,c,purchase,30\nu2,a,view,5\n")
    layout: Layout = make_layout("csv", ts_unit="ms")
    assert user_sequences(path, layout, BadRows()) == {"u1": ["a", "b", "c"], "u2": ["a"]}
    assert [e.item_id for e in timeline(path, layout, BadRows())] == ["a", "a", "b", "b", "c"]
