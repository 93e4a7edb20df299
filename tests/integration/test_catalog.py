"""The item id cache against a real Redis: overlapping lookups (the event path and HTTP
pulls share one catalogue) must not add the same ids twice, which would shift every later
id and put wrong item ids in every message."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from streamrec.state.catalog import ItemCatalog
from streamrec.state.keys import Keys
from tests.conftest import StackInfo

pytestmark = pytest.mark.integration


def test_overlapping_lookups_add_each_id_once(stack: StackInfo) -> None:
    async def run() -> tuple[list[str], list[str]]:
        redis = Redis.from_url(stack.redis_url)
        keys = Keys(f"cat{uuid.uuid4().hex[:8]}:")
        try:
            await redis.rpush(keys.item_ids, "a", "b", "c")
            catalog = ItemCatalog(redis, keys)
            await asyncio.gather(catalog.ensure(2), catalog.ensure(1), catalog.ensure(0))
            first = list(catalog.ids)
            await redis.rpush(keys.item_ids, "d", "e")
            await asyncio.gather(catalog.ensure(4), catalog.ensure(3))
            return first, list(catalog.ids)
        finally:
            await redis.aclose()

    first, later = asyncio.run(run())
    assert first == ["a", "b", "c"]
    assert later == ["a", "b", "c", "d", "e"]
