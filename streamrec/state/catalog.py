"""Item index -> item id, cached locally. The id list in Redis is append-only."""

from __future__ import annotations

from redis.asyncio import Redis

from streamrec.state.keys import Keys


class ItemCatalog:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self.ids: list[str] = []

    async def ensure(self, highest_index: int) -> list[str]:
        """The id list, fetched from Redis only for indexes not seen before. Calls that
        overlap (the event path and HTTP pulls share the catalogue) each add only what
        the list does not hold yet when their reply comes."""
        if highest_index >= len(self.ids):
            start = len(self.ids)
            fresh = await self._redis.lrange(self._keys.item_ids, start, -1)
            self.ids.extend(x.decode() if isinstance(x, bytes) else str(x)
                            for x in fresh[len(self.ids) - start:])
        return self.ids
