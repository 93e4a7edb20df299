"""Agent body of serving: user updates in, recommendation messages out."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any

from faust.types import EventT, TopicT

from serving.message import encode
from serving.recommender import Recommender
from streamrec import metrics
from streamrec.acks import hold, release
from streamrec.retry import redis_call
from streams.user_updates import UserUpdate

log = logging.getLogger(__name__)


async def serve(batches: AsyncIterator[Sequence[EventT[Any]]], recommender: Recommender,
                recommendations_topic: TopicT) -> None:
    async for batch in batches:
        hold(batch)
        updates = []
        for ev in batch:
            try:
                updates.append(UserUpdate.from_json(ev.value))
            except Exception:
                log.exception("unreadable user update offset=%s", ev.message.offset)
        if not updates:
            release(batch)
            continue
        received = {u.user_id: u.received for u in updates}
        start = time.perf_counter()
        messages = await redis_call("recommend", partial(recommender.recommend, updates))
        metrics.RECOMMEND_SECONDS.observe(time.perf_counter() - start)
        for message in messages:
            await recommendations_topic.send(key=message["user_id"].encode(),
                                             value=encode(message))
            rx = received.get(message["user_id"])
            if rx:
                metrics.FRESHNESS_SECONDS.observe(max(0.0, time.time() - rx / 1000))
        metrics.RECOMMENDATIONS.inc(len(messages))
        release(batch)
        metrics.STAGE_SECONDS.labels(stage="serving").observe(time.perf_counter() - start)
