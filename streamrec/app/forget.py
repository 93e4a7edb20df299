"""``streamrec users forget ID...``: forget users now, from the command line (workers need
not run): every key of each user deleted, the erasure recorded, a tombstone on the
recommendations topic, and a second one after any list computed just before is out (the
same steps as a stream worker's for a request on ``privacy.erasure``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from streamrec.kernel.clients import aiokafka_options, redis_client
from streamrec.kernel.outbox import Outbox
from streamrec.kernel.settings import Settings
from streamrec.state.erasure import Eraser
from streamrec.state.keys import Keys
from streams.erasure import AGAIN_AFTER_S, forget, send_tombstones


class _Producer:
    """aiokafka's producer with the ``send`` the outbox expects (key before value)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None, timestamp: float | None,
                   headers: Any) -> Awaitable[Any]:
        delivery: Awaitable[Any] = await self._producer.send(topic, value=value, key=key,
                                                             partition=partition)
        return delivery


async def forget_users(settings: Settings, users: Sequence[str]) -> dict[str, int]:
    """Forget ``users`` (raw ids; with pseudonymous ids, their pseudonyms are forgotten);
    returns the keys deleted per user."""
    pseudonymize = settings.privacy.pseudonymizer()
    stored = {user: pseudonymize(user) if pseudonymize else user for user in users}
    redis = redis_client(settings.redis)
    producer = AIOKafkaProducer(**aiokafka_options(settings.kafka), acks="all")
    await producer.start()
    adapter = _Producer(producer)

    async def started() -> _Producer:
        return adapter

    try:
        outbox, topic = Outbox(started), settings.topics.recommendations
        out = outbox.records()
        deleted = await forget(Eraser(redis, Keys(settings.redis.prefix)), out, topic,
                               list(stored.values()), int(time.time() * 1000))
        await out.delivered()
        await asyncio.sleep(AGAIN_AFTER_S)
        await send_tombstones(outbox, topic, list(stored.values()))
        return {user: deleted[pseudo] for user, pseudo in stored.items()}
    finally:
        await producer.stop()
        await redis.aclose()
