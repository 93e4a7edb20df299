"""Per-partition watermarks of the state step (the offsets already applied)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio import Redis

from streamrec.state.keys import Keys

log = logging.getLogger(__name__)


async def reset_watermarks(redis: Redis, keys: Keys, group: str, topics: Sequence[str]) -> int:
    """Forget the watermarks of ``topics``: they are about to be new logs, starting at 0."""
    removed = 0
    for topic in topics:
        found = [key async for key in redis.scan_iter(match=keys.watermark_pattern(group, topic),
                                                      count=1000)]
        if found:
            removed += int(await redis.delete(*found))
    if removed:
        log.warning("watermarks reset group=%s topics=%s keys=%d (topics were recreated)",
                    group, ",".join(topics), removed)
    return removed
