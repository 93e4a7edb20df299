"""``streamrec produce``: publish a data set as events, in replay order, optionally throttled."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from tqdm import tqdm

from recmodels.datasets import (
    Interaction,
    read_ml100k,
    read_seq_stream,
    synthetic_stream,
)
from streamrec.client import AsyncEventProducer
from streamrec.kernel.errors import DataError
from streamrec.kernel.settings import Settings

FLUSH_EVERY = 1000  # events between delivery checks


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
    """Publish the file's events through the client (validated, keyed by user, each to its
    type's topic), at most ``rate`` per second; returns how many were delivered."""
    events, total = load_stream(file, fmt, limit)
    start = time.perf_counter()
    delivered = 0
    with tqdm(total=total, unit="ev", file=sys.stderr, disable=not progress) as bar:
        async with AsyncEventProducer(kafka=settings.kafka, topics=settings.topics) as producer:
            for sent, e in enumerate(events, 1):
                await producer.send(e.user_id, e.item_id, e.type, ts=e.ts, event_id=e.event_id)
                ahead = sent / rate - (time.perf_counter() - start) if rate else 0.0
                if sent % FLUSH_EVERY == 0 or ahead > 0.002:
                    done = await producer.flush()
                    delivered += done
                    bar.update(done)
                    if ahead > 0.002:
                        await asyncio.sleep(ahead)
            done = await producer.flush()
            delivered += done
            bar.update(done)
    return delivered
