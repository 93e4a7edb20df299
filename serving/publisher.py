"""Serving: users whose state changed in, recommendation messages out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from recmodels.online import FreshVectors
from serving.recommender import Recommender
from streamrec.contracts.user_update import UserUpdate
from streamrec.kernel import metrics
from streamrec.kernel.consumer import Batch
from streamrec.kernel.outbox import InOrderDelivery, Outbox, Records
from streamrec.kernel.retry import redis_call
from streamrec.state.reader import Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """What the state step hands to the announcement besides the users: the vectors it
    computed for them, and (role all) the serving read of their state, already under way."""

    fresh: FreshVectors | None = None
    snapshot: asyncio.Future[Snapshot] | None = None


# the users of a batch, its records, and what the state step prepared for them
Announce = Callable[[Sequence[UserUpdate], Records, Prepared], Awaitable[None]]


def serve_inline(recommender: Recommender, topic: str) -> Announce:
    """Compute and publish one list per user; freshness is observed once they are delivered.
    ``prepared`` (role all): the vectors the state step just computed, used for these lists
    and stored with them, and the read of the users' state it started."""
    async def announce(updates: Sequence[UserUpdate], out: Records,
                       prepared: Prepared) -> None:
        if not updates:
            return
        start = time.perf_counter()
        served = await redis_call("recommend", partial(
            recommender.lists, updates, fresh=prepared.fresh, snapshot=prepared.snapshot))
        metrics.RECOMMEND_SECONDS.observe(time.perf_counter() - start)
        messages = served.messages
        # the lists go to the producer while Redis stores them (for the online hit rate):
        # the write's round trip is not on their way out
        remembering = asyncio.ensure_future(
            redis_call("remember_served", partial(recommender.remember, served)))
        try:
            for message in messages:
                await out.send(topic, message.user_id.encode(), message.to_json())
        except BaseException:  # stopping, or the producer failed: the batch comes again
            remembering.cancel()
            raise
        await remembering
        received = [u.received for u in updates if u.received]

        def delivered() -> None:
            now_ms = time.time() * 1000
            for rx in received:
                metrics.FRESHNESS_SECONDS.observe(max(0.0, now_ms - rx) / 1000)
            metrics.RECOMMENDATIONS.inc(len(messages))

        out.after_delivery(delivered)
        metrics.STAGE_SECONDS.labels(stage="serving").observe(time.perf_counter() - start)
    return announce


async def serve(batches: AsyncIterator[Batch], announce: Announce, outbox: Outbox,
                acknowledge: Callable[[Batch], None]) -> None:
    """Role ``serving``: lists for the users of each batch of ``streamrec.user-updates``."""
    delivery = InOrderDelivery()
    async for batch in batches:
        updates = []
        for record in batch:
            try:
                updates.append(UserUpdate.from_json(record.value or b""))
            except Exception:
                log.exception("unreadable user update offset=%s", record.offset)
        out = outbox.records()
        await announce(updates, out, Prepared())  # the stream workers stored the vectors
        await delivery.hand_over(out, partial(acknowledge, batch))
    await delivery.drain()
