"""The users in Redis: one scan of the user hashes, and every user's sequence."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from streamrec.state.keys import Keys
from streamrec.state.reader import decode_sequence

SCAN_COUNT = 2000  # keys asked for per SCAN call
CHUNK = 2000  # users read per pipelined round trip


async def user_ids(redis: Redis, keys: Keys) -> list[str]:
    """The id of every user with a user hash, sorted (the bought sets are skipped)."""
    found = [keys.user_of(raw.decode()) async for raw in
             redis.scan_iter(match=keys.user_pattern, count=SCAN_COUNT)]
    return sorted(user for user in found if user is not None)


async def read_sequences(redis: Redis, keys: Keys) -> tuple[list[str], dict[str, list[str]]]:
    """Item ids in Redis index order, and every user's recent sequence as item ids (users
    without one are left out)."""
    r: Any = redis  # redis-py's async return types are too loose to be useful here
    ids = [x.decode() for x in await r.lrange(keys.item_ids, 0, -1)]
    users = await user_ids(redis, keys)
    sequences: dict[str, list[str]] = {}
    for start in range(0, len(users), CHUNK):
        chunk = users[start:start + CHUNK]
        pipe = r.pipeline(transaction=False)
        for user in chunk:
            pipe.hget(keys.user(user), "seq")
        for user, packed in zip(chunk, await pipe.execute(), strict=True):
            if packed:
                sequences[user] = [ids[i] for i in decode_sequence(packed)]
    return ids, sequences
