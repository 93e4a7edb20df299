"""``streamrec users forget ID...``: forget users now, from the command line (workers need
not run): every key of each user deleted, the erasure recorded, a tombstone on the
recommendations topic, and a second one after any list computed just before is out (the
same steps as a stream worker's for a request on ``privacy.erasure``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from streamrec.kernel.clients import aiokafka_options, redis_client
from streamrec.kernel.settings import Settings
from streamrec.state.erasure import Eraser
from streamrec.state.keys import Keys
from streams.erasure import AGAIN_AFTER_S


async def _tombstones(producer: AIOKafkaProducer, topic: str, users: Sequence[str]) -> None:
    sent = [await producer.send(topic, value=None, key=user.encode()) for user in users]
    await asyncio.gather(*sent)


async def forget_users(settings: Settings, users: Sequence[str]) -> dict[str, int]:
    """Forget ``users`` (raw ids; with pseudonymous ids, their pseudonyms are forgotten);
    returns the keys deleted per user."""
    pseudonymize = settings.privacy.pseudonymizer()
    stored = {user: pseudonymize(user) if pseudonymize else user for user in users}
    redis = redis_client(settings.redis)
    producer = AIOKafkaProducer(**aiokafka_options(settings.kafka), acks="all")
    await producer.start()
    try:
        deleted = await Eraser(redis, Keys(settings.redis.prefix)).forget(
            list(stored.values()), int(time.time() * 1000))
        topic = settings.topics.recommendations
        await _tombstones(producer, topic, list(stored.values()))
        await asyncio.sleep(AGAIN_AFTER_S)
        await _tombstones(producer, topic, list(stored.values()))
        return {user: deleted[pseudo] for user, pseudo in stored.items()}
    finally:
        await producer.stop()
        await redis.aclose()
