"""``streamrec produce``: publish a data set as events, in replay order, optionally throttled."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from recmodels.datasets import (
    Interaction,
    read_ml100k,
    read_seq_stream,
    synthetic_stream,
)
from streamrec.clients import aiokafka_options
from streamrec.errors import DataError
from streamrec.settings import Settings
from streamrec.topics import input_topics


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


def event_payload(event: Interaction) -> bytes:
    return orjson.dumps({"event_id": event.event_id, "user_id": event.user_id,
                         "item_id": event.item_id, "type": event.type, "ts": event.ts})


class EventPublisher:
    """One producer for many sends: events go to their typed topic, keyed by user."""

    def __init__(self, settings: Settings, linger_ms: int = 5) -> None:
        self._topics = input_topics(settings)
        self._producer = AIOKafkaProducer(**aiokafka_options(settings.kafka),
                                          linger_ms=linger_ms, max_batch_size=256 * 1024)

    async def __aenter__(self) -> EventPublisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, event: Interaction) -> asyncio.Future[object]:
        """Hand one event to the producer; the returned future completes on delivery."""
        future: asyncio.Future[object] = await self._producer.send(
            self._topics[event.type], event_payload(event), key=event.user_id.encode())
        return future

    async def send_all(self, events: Iterable[Interaction]) -> int:
        pending = [await self.send(e) for e in events]
        await asyncio.gather(*pending)
        return len(pending)


async def publish(settings: Settings, events: Iterable[Interaction], total: int,
                  rate: float | None = None, progress: bool = False) -> int:
    """Publish events to the typed input topics, keyed by user; returns the count."""
    bar = tqdm(total=total, unit="ev", file=sys.stderr, disable=not progress)
    sent = 0
    start = time.perf_counter()
    pending: list[asyncio.Future[object]] = []
    try:
        async with EventPublisher(settings) as publisher:
            for event in events:
                pending.append(await publisher.send(event))
                sent += 1
                if len(pending) >= 1000:
                    await asyncio.gather(*pending)
                    bar.update(len(pending))
                    pending.clear()
                if rate:
                    ahead = sent / rate - (time.perf_counter() - start)
                    if ahead > 0.002:
                        await asyncio.sleep(ahead)
                        if pending:
                            await asyncio.gather(*pending)
                            bar.update(len(pending))
                            pending.clear()
            await asyncio.gather(*pending)
            bar.update(len(pending))
    finally:
        bar.close()
    return sent


async def produce_file(settings: Settings, file: str, fmt: str, limit: int | None = None,
                       rate: float | None = None, progress: bool = True) -> int:
    events, total = load_stream(file, fmt, limit)
    return await publish(settings, events, total, rate=rate, progress=progress)
