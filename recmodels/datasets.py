"""Public data sets as interaction streams: Amazon Games (``seq``), MovieLens 100K, synthetic.

Every reader yields :class:`Interaction` in replay order (time order where the data has
time; see each reader for the rule) with a stable ``event_id`` so republishing dedupes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamrec.kernel.errors import DataError

SEQ_BASE_TS_MS = 1_600_000_000_000
SEQ_STEP_MS = 1000


@dataclass(frozen=True, slots=True)
class Interaction:
    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: int  # epoch milliseconds
    session_id: str | None = None


def ml100k_type(rating: float) -> str:
    """Documented rule for MovieLens: rating 5 -> purchase, 4 -> click, otherwise view."""
    if rating >= 5:
        return "purchase"
    if rating >= 4:
        return "click"
    return "view"


def read_ml100k(path: Path) -> list[Interaction]:
    """MovieLens 100K ratings sorted by (timestamp, user, item): either ``ml-100k.inter``
    (RecBole atomic layout, with a header) or GroupLens' own ``u.data`` (no header)."""
    rows: list[tuple[int, str, str, float]] = []
    try:
        with Path(path).open(encoding="utf-8") as fh:
            first = fh.readline()
            start = 2
            if "user_id" not in first:
                if len(first.split("\t")) < 4 or not first.split("\t")[0].strip().isdigit():
                    raise DataError(f"{path}: line 1: expected the ml-100k.inter header or "
                                    f"u.data fields, got {first.strip()[:60]!r}")
                fh.seek(0)
                start = 1
            for line_no, line in enumerate(fh, start=start):
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 4:
                    raise DataError(f"{path}: line {line_no}: expected 4 tab-separated "
                                    "fields (user, item, rating, timestamp)")
                try:
                    rows.append((int(float(parts[3])), parts[0], parts[1], float(parts[2])))
                except ValueError as exc:
                    raise DataError(f"{path}: line {line_no}: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start} of a "
                        "block)") from None
    rows.sort(key=lambda r: (r[0], int(r[1]) if r[1].isdigit() else r[1],
                             int(r[2]) if r[2].isdigit() else r[2]))
    return [Interaction(f"ml100k-{u}-{i}-{ts}", u, i, ml100k_type(rating), ts * 1000)
            for ts, u, i, rating in rows]


def read_sequences(path: Path) -> dict[str, list[str]]:
    """``user item`` lines (Video.txt) or ``user item item ...`` lines (one line per user,
    as the S3-Rec files): each user's items in time order, lines of a user appended."""
    sequences: dict[str, list[str]] = {}
    try:
        with Path(path).open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) < 2:
                    raise DataError(f"{path}: line {line_no}: expected 'user item [item "
                                    f"...]', got {line.strip()[:60]!r}")
                sequences.setdefault(parts[0], []).extend(parts[1:])
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start} of a "
                        "block)") from None
    return sequences


def read_seq_stream(path: Path, seed: int = 0) -> list[Interaction]:
    """Video.txt as a stream. The file has no timestamps: users are interleaved by a
    seeded random merge that keeps each user's order; event k gets ts = base + k s.
    All events are views."""
    sequences = read_sequences(path)
    rng = random.Random(seed)
    slots = [user for user, items in sequences.items() for _ in items]
    rng.shuffle(slots)
    cursor = dict.fromkeys(sequences, 0)
    out = []
    for k, user in enumerate(slots):
        pos = cursor[user]
        cursor[user] = pos + 1
        out.append(Interaction(f"seq-{user}-{pos}", user, sequences[user][pos], "view",
                               SEQ_BASE_TS_MS + k * SEQ_STEP_MS))
    return out


def synthetic_stream(n_events: int, n_users: int = 2000, n_items: int = 500,
                     seed: int = 7, start_ts_ms: int = SEQ_BASE_TS_MS,
                     same_ts: float = 0.1, late: float = 0.02) -> Iterator[Interaction]:
    """Seeded synthetic behaviour: Zipf item popularity, sessions of view -> click -> purchase
    funnels, and item-to-item locality (next items tend to follow the previous one).

    The product's input mix: about 30% clicks and purchases; a share ``same_ts`` of a
    session's steps has the timestamp of the step before (equal timestamps within a user);
    a share ``late`` of events carries a timestamp 1-30 s older than its place in the
    stream (late events)."""
    rng = random.Random(seed)
    # cumulative once: random.choices accumulates its weights at every call (O(items)),
    # and draws the same items from the same cumulative weights
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) ** 1.1 for rank in range(n_items)))
    items = range(n_items)
    ts = start_ts_ms
    made = 0
    session = 0
    while made < n_events:
        session += 1
        user = f"user-{rng.randrange(n_users)}"
        item = rng.choices(items, cum_weights=cumulative)[0]
        for _ in range(rng.randint(1, 6)):
            for kind, go_on in (("view", 0.3), ("click", 0.3), ("purchase", 0.0)):
                ts += 0 if rng.random() < same_ts else rng.randint(50, 2000)
                event_ts = ts - rng.randint(1000, 30_000) if rng.random() < late else ts
                yield Interaction(f"syn-{seed}-{made}", user, f"item-{item}", kind, event_ts)
                made += 1
                if made >= n_events or rng.random() >= go_on:
                    break
            if made >= n_events:
                return
            step = rng.choice((1, 1, 2, 3, -1, 5))
            item = (item + step) % n_items if rng.random() < 0.7 else \
                rng.choices(items, cum_weights=cumulative)[0]


def read_titles(path: Path) -> dict[str, str]:
    """``ml-100k.item`` (tab-separated, header) or GroupLens' ``u.item`` (``|``-separated,
    latin-1): item id -> "Title (year)"."""
    titles: dict[str, str] = {}
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read titles: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    for line in text.splitlines():
        if "|" in line:
            parts = line.split("|")
            if len(parts) >= 2 and parts[0].isdigit():
                titles[parts[0]] = parts[1]
            continue
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isdigit():
            year = f" ({parts[2]})" if len(parts) > 2 and parts[2] else ""
            titles[parts[0]] = parts[1] + year
    return titles
