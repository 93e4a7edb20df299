"""Erasure requests from the ``privacy.erasure`` topic (key = user_id): each user is
forgotten (:mod:`streamrec.state.erasure`) and gets a tombstone on the recommendations
topic, so the compacted topic drops their last list. A list computed from the user's state
just before the erasure may still be delivered after that tombstone; a second tombstone
follows ``AGAIN_AFTER_S`` later, once such a list is out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial

import orjson

from streamrec.kernel import metrics
from streamrec.kernel.consumer import Batch
from streamrec.kernel.outbox import Outbox, Records
from streamrec.kernel.retry import redis_call
from streamrec.state.erasure import Eraser

log = logging.getLogger(__name__)

AGAIN_AFTER_S = 2.0


def requested_user(key: bytes | None, value: bytes | None) -> str | None:
    """The user an erasure record names: its key, else ``user_id`` in a JSON value."""
    if key:
        return key.decode("utf-8", errors="replace")
    try:
        body = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    user = body.get("user_id") if isinstance(body, dict) else None
    return str(user) if isinstance(user, str | int) and str(user) else None


async def forget(eraser: Eraser, out: Records, topic: str, users: Sequence[str],
                 now_ms: int) -> dict[str, int]:
    """Forget the users and queue a tombstone for each on ``topic``; returns the keys
    deleted per user."""
    deleted = await redis_call("forget_users", partial(eraser.forget, users, now_ms))
    for user in users:
        await out.send(topic, user.encode(), None)
    metrics.ERASED_USERS.inc(len(users))
    return deleted


async def send_tombstones(outbox: Outbox, topic: str, users: Sequence[str]) -> None:
    """A tombstone for each user on ``topic``, delivered."""
    out = outbox.records()
    for user in users:
        await out.send(topic, user.encode(), None)
    await out.delivered()


async def _tombstones_again(outbox: Outbox, topic: str, users: Sequence[str]) -> None:
    await asyncio.sleep(AGAIN_AFTER_S)
    await send_tombstones(outbox, topic, users)


async def process_erasures(batches: AsyncIterator[Batch], eraser: Eraser, outbox: Outbox,
                           topic: str, acknowledge: Callable[[Batch], None],
                           pseudonymize: Callable[[str], str] | None = None) -> None:
    """Forget the users of each batch of erasure requests, deliver their tombstones, then
    acknowledge the batch (a crash before that forgets them again: harmless). Requests
    name raw ids; with pseudonymous ids, their pseudonyms are forgotten."""
    again: set[asyncio.Task[None]] = set()
    try:
        async for batch in batches:
            users: list[str] = []
            for record in batch:
                user = requested_user(record.key, record.value)
                if user is not None and pseudonymize is not None:
                    user = pseudonymize(user)
                if user is None:
                    log.warning("erasure request without a user id topic=%s offset=%s",
                                record.topic, record.offset)
                elif user not in users:
                    users.append(user)
            if users:
                out = outbox.records()
                await forget(eraser, out, topic, users, int(time.time() * 1000))
                await out.delivered()
                log.info("users forgotten count=%d", len(users))
                task = asyncio.ensure_future(_tombstones_again(outbox, topic, users))
                again.add(task)
                task.add_done_callback(again.discard)
            acknowledge(batch)
    finally:
        for task in again:
            task.cancel()
