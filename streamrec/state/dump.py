"""``streamrec state dump``: the whole online state as canonical JSON.

Item ids instead of internal indexes, keys and members sorted, popularity expressed at
the half-life step of the latest event seen (so it does not depend on the landmark).
Dedupe keys and watermarks are bookkeeping, not state, and are left out.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from streamrec.kernel.clients import redis_client
from streamrec.kernel.settings import Settings
from streamrec.state.keys import Keys
from streamrec.state.reader import decode_sequence
from streamrec.state.users import bought_items, user_ids


def _num(x: float) -> float | int:
    value = float(f"{x:.15g}")
    return int(value) if value.is_integer() else value


def _int(raw: bytes | None) -> int | None:
    """An integer field; None when absent or not an integer (a corrupted value)."""
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


async def _markov_rows(redis: Redis, keys: Keys) -> list[tuple[str, int]]:
    """Each Markov row key with its item index, sorted by key."""
    found = [raw.decode() async for raw in redis.scan_iter(match=keys.markov_pattern,
                                                           count=1000)]
    return sorted((key, idx) for key in found if (idx := keys.markov_row_of(key)) is not None)


async def collect_state(redis: Redis, keys: Keys, half_life_s: float) -> dict[str, Any]:
    """The state as canonical data. On a live state this is not one snapshot, but every
    item index it holds resolves: the item list only grows, and is read last."""
    r: Any = redis  # redis-py's async return types are too loose to be useful here
    totals = await r.hgetall(keys.markov_totals)
    rows = [(idx, await r.zrange(key, 0, -1, withscores=True))
            for key, idx in await _markov_rows(redis, keys)]
    meta = await r.hgetall(keys.popularity_meta)
    pop = await r.zrange(keys.popularity, 0, -1, withscores=True)
    user_fields = [(user_id, await r.hgetall(keys.user(user_id)),
                    await bought_items(redis, keys, user_id))
                   for user_id in await user_ids(redis, keys)]
    ids = [x.decode() for x in await r.lrange(keys.item_ids, 0, -1)]

    def name(idx: Any) -> str:  # "#idx" for an index no item has (a corrupted value)
        try:
            return str(ids[int(idx)])
        except (ValueError, IndexError):
            return f"#{idx.decode(errors='replace') if isinstance(idx, bytes) else idx}"

    markov: dict[str, Any] = {}
    for idx, row in rows:
        markov[name(idx)] = {
            "total": _num(float(totals.get(str(idx).encode(), 0))),
            "next": {name(m): _num(s) for m, s in sorted(row, key=lambda r: name(r[0]))},
        }

    scale = 1.0
    if half_life_s > 0 and b"landmark_step" in meta:
        landmark_step, max_ts = int(float(meta[b"landmark_step"])), int(float(meta[b"max_ts"]))
        scale = 2.0 ** (landmark_step - max_ts // int(half_life_s * 1000))
    popularity = {name(m): _num(s * scale) for m, s in pop}

    users: dict[str, Any] = {}
    for user_id, fields, bought in user_fields:
        if not fields:  # gone since the scan (forgotten, or expired)
            continue
        users[user_id] = {
            "sequence": [name(i) for i in decode_sequence(fields.get(b"seq", b""))],
            "events": _int(fields.get(b"n")) or 0,
            "last_ts": _int(fields.get(b"ts")),
            "bought": sorted(name(b) for b in bought),
        }
    return {
        "items": sorted(ids),
        "markov": markov,
        "popularity": popularity,
        "popularity_at_ts": int(float(meta[b"max_ts"])) if b"max_ts" in meta else None,
        "users": users,
    }


def canonical_json(state: dict[str, Any]) -> bytes:
    return orjson.dumps(state, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)


async def dump_state(settings: Settings) -> bytes:
    redis = redis_client(settings.redis)
    try:
        state = await collect_state(redis, Keys(settings.redis.prefix),
                                    settings.state.popularity_half_life_s)
    finally:
        await redis.aclose()
    return canonical_json(state)
