"""The users in Redis: one scan of the user hashes, and every user's sequence."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from streamrec.state.keys import Keys
from streamrec.state.reader import decode_sequence

SCAN_COUNT = 2000  # keys asked for per SCAN call
CHUNK = 2000  # users read per pipelined round trip


async def user_ids(redis: Redis, keys: Keys) -> list[str]:
    """The id of every user with a user hash, sorted (the bought sets are skipped)."""
    found = [keys.user_of(raw.decode()) async for raw in
             redis.scan_iter(match=keys.user_pattern, count=SCAN_COUNT)]
    return sorted(user for user in found if user is not None)


async def bought_items(redis: Redis, keys: Keys, user_id: str,
                       reply: Any = None) -> list[bytes]:
    """The item indexes of a user's bought set, latest purchase last (a plain set written
    before the sets were bounded: its items, unordered; until its next purchase).
    ``reply``: the ZRANGE of the set already read (in a pipeline), or None to read it."""
    r: Any = redis
    if reply is None:
        try:
            reply = await r.zrange(keys.bought(user_id), 0, -1)
        except ResponseError as exc:
            reply = exc
    if isinstance(reply, ResponseError):  # WRONGTYPE: the plain set of an older version
        return list(await r.smembers(keys.bought(user_id)))
    return list(reply)


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


async def user_profile(redis: Redis, keys: Keys, user_id: str) -> dict[str, Any] | None:
    """One user's state for people to read: recent items (oldest first), bought items,
    events applied and the newest event time; None when the user has no state."""
    r: Any = redis
    pipe = r.pipeline(transaction=False)
    pipe.hmget(keys.user(user_id), "seq", "n", "ts")
    pipe.zrange(keys.bought(user_id), 0, -1)
    fields, reply = await pipe.execute(raise_on_error=False)
    if isinstance(fields, Exception):
        raise fields
    packed, n, ts = fields
    if n is None:
        return None
    bought = await bought_items(redis, keys, user_id, reply)
    indexes = decode_sequence(packed or b"")
    wanted = [*indexes, *(int(b) for b in bought)]
    pipe = r.pipeline(transaction=False)
    for idx in wanted:
        pipe.lindex(keys.item_ids, idx)
    names = [x.decode() if x is not None else f"#{idx}"
             for idx, x in zip(wanted, await pipe.execute(), strict=True)]
    return {"user_id": user_id, "events": int(n), "last_ts": int(ts) if ts else None,
            "recent": names[:len(indexes)], "bought": sorted(names[len(indexes):])}
