"""What serving writes for a batch of users, in one round trip: the served lists (for the
online hit rate) and the user vectors with their model version. One Lua script with packed
arguments instead of a pipelined command per user (redis-py builds each command in Python,
which costs more than the writes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources

import numpy as np
from redis.asyncio import Redis

from streamrec.state.keys import Keys

_SCRIPT = resources.files("streamrec.state").joinpath("write_users.lua").read_text()


class UserWriter:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._prefix = keys.prefix
        self._script = redis.register_script(_SCRIPT)

    async def write(self, served: Mapping[str, Sequence[int]], ttl_s: int,
                    vectors: Mapping[str, np.ndarray], version: str) -> None:
        """``served``: each user's list (item indexes), kept ``ttl_s``; ``vectors``: each
        user's vector, made by model ``version``."""
        if not served and not vectors:
            return
        args: list[str | int | bytes] = [self._prefix, ttl_s, version, len(served)]
        for user_id, items in served.items():
            args += (user_id, np.asarray(items, dtype="<u4").tobytes())
        for user_id, vector in vectors.items():
            args += (user_id, np.ascontiguousarray(vector, dtype="<f4").tobytes())
        await self._script(args=args)
