"""``streamrec produce``: publish a data set as events, in replay order, optionally throttled."""

from __future__ import annotations

import asyncio

from recmodels.adapters import BadRows, Layout, interactions
from streamrec.client import AsyncEventProducer
from streamrec.kernel.pacing import Pacer
from streamrec.kernel.settings import Settings

FLUSH_EVERY = 1000  # events between delivery checks


async def produce_file(settings: Settings, file: str, fmt: str | Layout,
                       limit: int | None = None, rate: float | None = None,
                       progress: bool = True) -> tuple[int, BadRows]:
    """Publish the file's events, read as they are sent (memory stays flat), through the
    client (validated, keyed by user, each to its type's topic), at most ``rate`` per
    second; returns how many were delivered, and the rows that were not events."""
    bad = BadRows()
    events = interactions(file, fmt, bad, progress=progress, limit=limit)
    pacer = Pacer(rate)
    delivered = 0
    async with AsyncEventProducer(kafka=settings.kafka, topics=settings.topics) as producer:
        for sent, e in enumerate(events, 1):
            await producer.send(e.user_id, e.item_id, e.type, ts=e.ts, event_id=e.event_id,
                                session_id=e.session_id)
            wait = pacer.ahead(sent)
            if sent % FLUSH_EVERY == 0 or wait:
                delivered += await producer.flush()
                if wait:
                    await asyncio.sleep(wait)
        delivered += await producer.flush()
    return delivered, bad
