"""Bring-your-own data: CSV, JSON Lines and Parquet files read as interaction streams.

A :class:`Layout` says where each field is (a column map), how raw type values map to
view, click and purchase (or ``skip``), and how timestamps are written. Presets cover the
common public layouts. Files are read row by row (Parquet in record batches), so memory
stays flat however large the file; every row that cannot become an event is counted in
:class:`BadRows` with its line (or row) number and the reason, never dropped silently.

Rows without an event id get a stable one from the file name and the line (and, in
session files, the event's position in the session), so publishing a file again dedupes.
"""

from __future__ import annotations

import csv
import itertools
import math
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson
from tqdm import tqdm

from recmodels.datasets import (
    Interaction,
    read_ml100k,
    read_seq_stream,
    read_sequences,
    synthetic_stream,
)
from streamrec.contracts.event import EVENT_TYPES, MAX_TS_MS, check_identifier
from streamrec.kernel.errors import DataError, InvalidEvent

Kind = Literal["csv", "jsonl", "parquet"]
TsUnit = Literal["auto", "s", "ms", "iso"]
FIELDS = ("user", "item", "type", "ts", "session", "event_id")
REQUIRED = ("user", "item", "ts")
SKIP = "skip"
# epoch numbers below this are seconds (until the year 5138), others milliseconds
SECONDS_BELOW = 100_000_000_000
SHOWN_BAD_ROWS = 10


@dataclass(frozen=True)
class Layout:
    """Where a file's fields are and how to read them.

    ``columns`` maps user, item, type, ts and optionally session and event_id to column
    (CSV header, JSON key, Parquet column) names; ``types`` maps raw type values to view,
    click, purchase or ``skip`` (values already one of the three need no entry); without a
    type column every row is ``default_type``. ``nested``: a JSON Lines file whose lines
    hold a list of events under this key (user and session come from the line, the other
    fields from each event)."""

    kind: Kind
    columns: Mapping[str, str]
    types: Mapping[str, str] = field(default_factory=dict)
    ts_unit: TsUnit = "auto"
    delimiter: str | None = None  # CSV; None: tab for .tsv and .inter files, else comma
    default_type: str = "view"
    nested: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise DataError(f"column map: unknown field(s) {', '.join(unknown)}; expected "
                            f"{', '.join(FIELDS)}")
        missing = [f for f in REQUIRED if not self.columns.get(f)]
        if missing:
            raise DataError(f"column map: no column for {', '.join(missing)} (give "
                            f"--columns {missing[0]}=NAME)")
        for raw, mapped in self.types.items():
            if mapped not in (*EVENT_TYPES, SKIP):
                raise DataError(f"type map: {raw}={mapped}: expected view, click, purchase "
                                "or skip")
        if self.default_type not in EVENT_TYPES:
            raise DataError(f"default type {self.default_type!r}: expected view, click or "
                            "purchase")

    def describe(self) -> str:
        """For reports: ``csv (user=user_id, item=item_id, ...)``."""
        return f"{self.kind} (" + ", ".join(f"{k}={v}" for k, v in self.columns.items()) + ")"


PRESETS: dict[str, Layout] = {
    # RecBole atomic files (ml-100k.inter): tab-separated, header ``name:type`` columns
    "recbole": Layout("csv", {"user": "user_id", "item": "item_id", "ts": "timestamp"},
                      ts_unit="s", delimiter="\t"),
    # e-commerce behaviour logs: event_time,event_type,product_id,...,user_id,user_session
    "ecommerce": Layout("csv", {"user": "user_id", "item": "product_id",
                                "type": "event_type", "ts": "event_time",
                                "session": "user_session"},
                        types={"cart": "click", "remove_from_cart": SKIP}, ts_unit="iso"),
    # session JSON Lines: {"session": 1, "events": [{"aid": 2, "ts": 3, "type": "clicks"}]}
    "sessions": Layout("jsonl", {"user": "session", "session": "session", "item": "aid",
                                 "ts": "ts", "type": "type"},
                       types={"clicks": "view", "carts": "click", "orders": "purchase"},
                       ts_unit="auto", nested="events"),
    # timestamp,visitorid,event,itemid,transactionid (ms)
    "retailrocket": Layout("csv", {"user": "visitorid", "item": "itemid", "type": "event",
                                   "ts": "timestamp"},
                           types={"addtocart": "click", "transaction": "purchase"},
                           ts_unit="ms"),
}


def parse_pairs(text: str | None, what: str) -> dict[str, str]:
    """``a=b,c=d`` (a command-line map) as a dict; errors name ``what``. A value may be
    empty (``type=``: no such column)."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise DataError(f"{what}: {part.strip()!r}: expected NAME=VALUE")
        out[key.strip()] = value.strip()
    return out


# a bare csv, jsonl or parquet file: these columns unless --columns says otherwise
DEFAULT_COLUMNS = {"user": "user_id", "item": "item_id", "type": "type", "ts": "ts"}


def make_layout(kind: str | None, preset: str | None = None, columns: str | None = None,
                types: str | None = None, ts_unit: str | None = None,
                delimiter: str | None = None) -> Layout:
    """The layout of the command line: a preset (or a bare kind with the default columns
    user_id, item_id, type, ts), with the columns, types, timestamp unit and delimiter
    given overriding or extending it."""
    if preset is not None:
        if preset not in PRESETS:
            raise DataError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
        base = PRESETS[preset]
        if kind is not None and kind != base.kind:
            raise DataError(f"preset {preset!r} reads {base.kind} files, not {kind}")
    elif kind in ("csv", "jsonl", "parquet"):
        base = Layout(kind, DEFAULT_COLUMNS)  # type: ignore[arg-type]
    else:
        raise DataError(f"format {kind!r}: expected csv, jsonl or parquet (or a preset)")
    unit = ts_unit or base.ts_unit
    if unit not in ("auto", "s", "ms", "iso"):
        raise DataError(f"--ts-unit {unit!r}: expected auto, s, ms or iso")
    if delimiter is not None and len(delimiter.replace("\\t", "\t")) != 1:
        raise DataError(f"--delimiter {delimiter!r}: expected one character (or \\t)")
    merged = {name: column for name, column in
              {**base.columns, **parse_pairs(columns, "--columns")}.items() if column}
    return replace(base, columns=merged,
                   types={**base.types, **parse_pairs(types, "--types")},
                   ts_unit=unit,  # type: ignore[arg-type]
                   delimiter=delimiter.replace("\\t", "\t") if delimiter is not None
                   else base.delimiter)


class RowError(ValueError):
    """One row that cannot become an event; the message is the reason."""


@dataclass
class BadRows:
    """Rows that did not become events: how many, the first few with where and why, and
    rows skipped on purpose (a type mapped to ``skip``) by raw type."""

    count: int = 0
    first: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        if len(self.first) < SHOWN_BAD_ROWS:
            self.first.append((where, reason))

    def report(self, path: str | Path) -> str:
        """Lines for the user (empty when every row became an event)."""
        lines = []
        if self.count:
            lines.append(f"{path}: {self.count} bad row(s) not published"
                         + (f", the first {len(self.first)}:" if self.count > len(self.first)
                            else ":"))
            lines += [f"  {where}: {reason}" for where, reason in self.first]
        if self.skipped:
            kinds = ", ".join(f"{raw} {n}" for raw, n in sorted(self.skipped.items()))
            lines.append(f"{path}: rows skipped by the type map: {kinds}")
        return "\n".join(lines)


def parse_timestamp(value: Any, unit: TsUnit) -> int:
    """Epoch milliseconds from a number (seconds or milliseconds, by ``unit``; ``auto``:
    below 10^11 seconds, else milliseconds) or an ISO-8601 text (``Z``, ``+02:00`` or
    `` UTC`` zones; none: UTC)."""
    if value is None or value == "":
        raise RowError("missing timestamp")
    if isinstance(value, bool):
        raise RowError(f"timestamp {value!r} is not a time")
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return _checked(round(moment.timestamp() * 1000), value)
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        if unit == "iso":
            return _iso_ms(text)
        try:
            number = float(text)
        except ValueError:
            if unit != "auto":
                raise RowError(f"timestamp {text[:40]!r} is not a number of "
                               f"{'seconds' if unit == 's' else 'milliseconds'}") from None
            return _iso_ms(text)
    if unit == "iso":
        raise RowError(f"timestamp {value!r} is a number, not ISO-8601 (--ts-unit s or ms)")
    if not math.isfinite(number) or number < 0:
        raise RowError(f"timestamp {str(value)[:40]!r} is not a time")
    seconds = unit == "s" or (unit == "auto" and number < SECONDS_BELOW)
    return _checked(round(number * 1000) if seconds else round(number), value)


def _checked(ms: int, value: Any) -> int:
    if not 0 <= ms <= MAX_TS_MS:
        raise RowError(f"timestamp {str(value)[:40]!r} is out of range")
    return ms


def _iso_ms(text: str) -> int:
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RowError(f"timestamp {text[:40]!r} is not ISO-8601 or a number") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _checked(round(moment.timestamp() * 1000), text)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowError(f"expected a text or a number, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _field_text(get: Mapping[str, Any], name: str, cols: Mapping[str, str]) -> str:
    try:
        return _text(get.get(name))
    except RowError as err:
        raise RowError(f"{name} (column {cols[name]!r}): {err}") from None


def _event(get: Mapping[str, Any], layout: Layout, default_id: str,
           bad: BadRows) -> Interaction | None:
    """The event of one row (``get``: field -> raw value); None when its type is skipped."""
    cols = layout.columns
    if cols.get("type"):
        raw_type = _field_text(get, "type", cols)
        if not raw_type:
            raise RowError(f"missing type (column {cols['type']!r})")
        mapped = layout.types.get(raw_type) or layout.types.get(raw_type.lower()) or \
            raw_type.lower()
        if mapped == SKIP:
            bad.skipped[raw_type] += 1
            return None
        if mapped not in EVENT_TYPES:
            raise RowError(f"type {raw_type[:40]!r} is not view, click or purchase (map it: "
                           f"--types {raw_type[:40]}=click, or ={SKIP})")
    else:
        mapped = layout.default_type
    ids = {}
    for name in ("user", "item", "event_id", "session"):
        if not cols.get(name):
            continue
        value = _field_text(get, name, cols)
        if not value and name in ("event_id", "session"):
            continue
        try:
            ids[name] = check_identifier(f"{name} (column {cols[name]!r})", value)
        except InvalidEvent as err:
            raise RowError(f"{err.field}: {err.detail}") from None
    ts = parse_timestamp(get.get("ts"), layout.ts_unit)
    return Interaction(ids.get("event_id") or default_id, ids["user"], ids["item"], mapped,
                       ts, session_id=ids.get("session"))


class _Counted:
    """Lines of a binary file, decoded, counting the bytes read (for the progress bar)."""

    def __init__(self, fh: BinaryIO, bar: tqdm[Any], where: str) -> None:
        self._fh = fh
        self._bar = bar
        self._where = where
        self.line = 0

    def __iter__(self) -> Iterator[str]:
        for raw in self._fh:
            self.line += 1
            self._bar.update(len(raw))
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{self._where}: line {self.line}: not UTF-8 ({exc.reason} at "
                                f"byte {exc.start})") from None


def read_interactions(path: str | Path, layout: Layout, bad: BadRows,
                      progress: bool = False) -> Iterator[Interaction]:
    """The file's events in file order; bad rows go to ``bad``. Raises :class:`DataError`
    for what no row can fix: a missing file, a missing column, a file that is not UTF-8."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    with tqdm(total=size, unit="B", unit_scale=True, file=sys.stderr, disable=not progress,
              desc=path.name) as bar:
        rows = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}[layout.kind]
        made = 0
        for event in rows(path, layout, bad, bar):
            made += 1
            if progress and made % 50_000 == 0:
                bar.set_postfix(events=made, bad=bad.count, refresh=False)
            yield event
        bar.set_postfix(events=made, bad=bad.count)


def _csv_rows(path: Path, layout: Layout, bad: BadRows, bar: tqdm[Any]
              ) -> Iterator[Interaction]:
    delimiter = layout.delimiter or ("\t" if path.suffix in (".tsv", ".inter") else ",")
    with path.open("rb") as fh:
        lines = _Counted(fh, bar, str(path))
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise DataError(f"{path}: line 1: the header is not CSV ({exc})") from None
        if header is None:
            raise DataError(f"{path}: empty file (expected a header line)")
        # RecBole headers name their columns ``name:type``
        names = [h.strip().lstrip("\ufeff").split(":")[0] for h in header]
        position = {}
        for name, column in layout.columns.items():
            if column not in names:
                raise DataError(f"{path}: line 1: no column {column!r} for {name} (the "
                                f"header has {', '.join(names)[:200]})")
            position[name] = names.index(column)
        stem = path.name
        for row in _rows(reader, bad):
            where = f"line {reader.line_num}"
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(names):
                bad.add(where, f"{len(row)} fields, the header has {len(names)}")
                continue
            try:
                event = _event({n: row[p] for n, p in position.items()}, layout,
                               f"{stem}:{reader.line_num}", bad)
            except RowError as err:
                bad.add(where, str(err))
                continue
            if event is not None:
                yield event


def _rows(reader: Any, bad: BadRows) -> Iterator[list[str]]:
    """The reader's rows; a line the csv module refuses (a carriage return or a NUL inside
    a field) is a bad row, and reading goes on with the next."""
    while True:
        try:
            row: list[str] = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            bad.add(f"line {reader.line_num}", f"not CSV: {exc}")
            continue
        yield row


def _jsonl_rows(path: Path, layout: Layout, bad: BadRows, bar: tqdm[Any]
                ) -> Iterator[Interaction]:
    cols = layout.columns
    top = ("user", "session") if layout.nested else FIELDS
    with path.open("rb") as fh:
        lines = _Counted(fh, bar, str(path))
        for text in lines:
            where = f"line {lines.line}"
            if not text.strip():
                continue
            try:
                body = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                bad.add(where, f"not JSON: {exc}")
                continue
            if not isinstance(body, dict):
                bad.add(where, f"expected a JSON object, got {type(body).__name__}")
                continue
            outer = {n: body.get(cols[n]) for n in top if cols.get(n)}
            if layout.nested is None:
                items: Iterable[tuple[str, dict[str, Any]]] = [(where, {})]
            else:
                nested = body.get(layout.nested)
                if not isinstance(nested, list):
                    bad.add(where, f"no list of events under {layout.nested!r}")
                    continue
                items = ((f"{where} event {k}", e) for k, e in enumerate(nested))
            for k, (at, inner) in enumerate(items):
                if not isinstance(inner, dict):
                    bad.add(at, f"expected a JSON object, got {type(inner).__name__}")
                    continue
                values = dict(outer)
                for name in FIELDS:
                    if name not in top and cols.get(name):
                        values[name] = inner.get(cols[name])
                default_id = f"{path.name}:{lines.line}" + (f":{k}" if layout.nested else "")
                try:
                    event = _event(values, layout, default_id, bad)
                except RowError as err:
                    bad.add(at, str(err))
                    continue
                if event is not None:
                    yield event


def _parquet_rows(path: Path, layout: Layout, bad: BadRows, bar: tqdm[Any]
                  ) -> Iterator[Interaction]:
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 (optional: pip install streamrec[parquet])
    except ImportError:
        raise DataError("reading Parquet needs pyarrow: pip install 'streamrec[parquet]'") \
            from None
    try:
        reader = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own error types for a file it cannot read
        raise DataError(f"{path}: not a Parquet file: {exc}") from None
    names = reader.schema_arrow.names
    for name, column in layout.columns.items():
        if column not in names:
            raise DataError(f"{path}: no column {column!r} for {name} (the file has "
                            f"{', '.join(names)[:200]})")
    wanted = sorted(set(layout.columns.values()))
    row = 0
    total_rows = max(1, reader.metadata.num_rows)
    size = bar.total or 0
    for batch in reader.iter_batches(batch_size=65_536, columns=wanted):
        data = {column: batch.column(column).to_pylist() for column in wanted}
        for k in range(batch.num_rows):
            row += 1
            values = {n: data[c][k] for n, c in layout.columns.items()}
            try:
                event = _event(values, layout, f"{path.name}:{row}", bad)
            except RowError as err:
                bad.add(f"row {row}", str(err))
                continue
            if event is not None:
                yield event
        bar.update(size * batch.num_rows // total_rows)



def interactions(path: str | Path, fmt: str | Layout, bad: BadRows,
                 progress: bool = False, limit: int | None = None) -> Iterator[Interaction]:
    """Events of a data file in file order: a :class:`Layout`, or a built-in format
    (``ml100k``, ``seq``, ``synthetic``, see :mod:`recmodels.datasets`)."""
    events: Iterable[Interaction]
    if isinstance(fmt, Layout):
        events = read_interactions(path, fmt, bad, progress)
    elif fmt == "ml100k":
        events = read_ml100k(Path(path))
    elif fmt == "seq":
        events = read_seq_stream(Path(path))
    elif fmt == "synthetic":
        events = synthetic_stream(limit or 20_000)
    else:
        raise DataError(f"format {fmt!r}: expected ml100k, seq, synthetic, csv, jsonl or "
                        "parquet")
    return itertools.islice(events, limit) if limit is not None else iter(events)


def user_sequences(path: str | Path, fmt: str | Layout, bad: BadRows
                   ) -> dict[str, list[str]]:
    """Each user's items in time order (equal times: file order), consecutive repeats of
    an item collapsed as the online state does (view, click, purchase of one item is one
    step). ``seq`` files are sequences already."""
    if fmt == "seq":
        return read_sequences(Path(path))
    by_user: dict[str, list[tuple[int, int, str]]] = {}
    for k, e in enumerate(interactions(path, fmt, bad)):
        by_user.setdefault(e.user_id, []).append((e.ts, k, e.item_id))
    sequences: dict[str, list[str]] = {}
    for user, steps in by_user.items():
        steps.sort()
        items = [steps[0][2]]
        items += [item for (_, _, prev), (_, _, item) in itertools.pairwise(steps)
                  if item != prev]
        sequences[user] = items
    return sequences


def timeline(path: str | Path, fmt: str | Layout, bad: BadRows) -> list[Interaction]:
    """All events in time order (equal times: file order), for replays."""
    events = list(interactions(path, fmt, bad))
    events.sort(key=lambda e: e.ts)  # stable
    return events
