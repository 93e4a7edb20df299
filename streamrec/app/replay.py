"""``streamrec produce``: publish a data set as events, in replay order, optionally throttled."""

from __future__ import annotations

from pathlib import Path

from recmodels.datasets import (
    Interaction,
    read_ml100k,
    read_seq_stream,
    synthetic_stream,
)
from streamrec.kernel.errors import DataError
from streamrec.kernel.settings import Settings
from streams.producer import publish


def load_stream(file: str, fmt: str, limit: int | None) -> tuple[list[Interaction], int]:
    if fmt == "ml100k":
        events = read_ml100k(Path(file))
    elif fmt == "seq":
        events = read_seq_stream(Path(file))
    elif fmt == "synthetic":
        events = list(synthetic_stream(limit or 20_000))
    else:
        raise DataError(f"format {fmt!r}: expected ml100k, seq or synthetic")
    if limit is not None:
        events = events[:limit]
    return events, len(events)


async def produce_file(settings: Settings, file: str, fmt: str, limit: int | None = None,
                       rate: float | None = None, progress: bool = True) -> int:
    events, total = load_stream(file, fmt, limit)
    return await publish(settings, events, total, rate=rate, progress=progress)
