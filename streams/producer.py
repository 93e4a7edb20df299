"""Publish interactions as events on the typed input topics, keyed by user (a producer for
``streamrec produce``, the demo, replay evaluation and the tests)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable

import orjson
from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from recmodels.datasets import Interaction
from streamrec.kernel.clients import aiokafka_options
from streamrec.kernel.pacing import Pacer
from streamrec.kernel.settings import Settings
from streamrec.kernel.topics import input_topics


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


async def publish(settings: Settings, events: Iterable[Interaction], total: int,
                  rate: float | None = None, progress: bool = False) -> int:
    """Publish events to the typed input topics, keyed by user; returns the count."""
    bar = tqdm(total=total, unit="ev", file=sys.stderr, disable=not progress)
    sent = 0
    pacer = Pacer(rate)
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
                if wait := pacer.ahead(sent):
                    await asyncio.sleep(wait)
                    if pending:
                        await asyncio.gather(*pending)
                        bar.update(len(pending))
                        pending.clear()
            await asyncio.gather(*pending)
            bar.update(len(pending))
    finally:
        bar.close()
    return sent
