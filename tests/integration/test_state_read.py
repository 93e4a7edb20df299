"""Serving's batch read against a real Redis: each user gets the Markov rows Redis holds for
the user's last distinct items, also when users of the batch share those rows (each shared
row is sent once and expanded per user)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from streamrec.contracts.event import Event
from streamrec.kernel.settings import StateSettings
from streamrec.state.keys import Keys
from streamrec.state.reader import ServingStateReader
from streamrec.state.store import ApplyConfig, Positioned, RedisStateStore
from tests.conftest import StackInfo

pytestmark = pytest.mark.integration

K = 2  # successors read per row: fewer than row "a" has, so the top K is a real cut


async def _expected_rows(redis: Redis, prefix: str, sequence: list[int],
                         history: int) -> list[tuple[int, float, list[tuple[int, float]]]]:
    """The user's rows read one by one: last distinct items first, top K successors."""
    items: list[int] = []
    for item in reversed(sequence):
        if item not in items and len(items) < history:
            items.append(item)
    rows = []
    for item in items:
        total = float(await redis.hget(f"{prefix}mk:total", str(item)) or 0)
        succ = await redis.zrevrange(f"{prefix}mk:{item}", 0, K - 1, withscores=True)
        rows.append((item, total, [(int(s), float(c)) for s, c in succ]))
    return rows


def test_shared_markov_rows_reach_every_user_that_has_them(stack: StackInfo) -> None:
    async def go() -> None:
        redis = Redis.from_url(stack.redis_url)
        prefix = f"sr{uuid.uuid4().hex[:6]}:"
        spec = [("ann", "a", "view"), ("ann", "b", "click"), ("bob", "a", "view"),
                ("bob", "c", "purchase"), ("cy", "a", "view"), ("cy", "d", "view"),
                ("ann", "a", "view"), ("dee", "b", "view"), ("dee", "a", "view")]
        events = [Positioned("ev", 0, n, Event(f"id-{n}", user, item, kind, 1_000 + n))
                  for n, (user, item, kind) in enumerate(spec)]
        await RedisStateStore(redis, ApplyConfig.from_settings(
            prefix, "g", StateSettings(popularity_half_life_s=0))).apply(events)
        reader = ServingStateReader(redis, Keys(prefix), history=2, row_size=K, popular=5)
        users = ["ann", "bob", "cy", "dee", "nobody"]
        try:
            snap = await reader.read(users, vectors=False)
            m = snap.markov
            got: list[list[tuple[int, float, list[tuple[int, float]]]]] = [[] for _ in users]
            for r, (user, item, total) in enumerate(zip(m.row_user.tolist(),
                                                        m.row_item.tolist(),
                                                        m.row_total.tolist(), strict=True)):
                succ = [(int(s), float(c)) for s, c, of in zip(
                    m.succ_item.tolist(), m.succ_count.tolist(), m.succ_row.tolist(),
                    strict=True) if of == r]
                got[user].append((item, total, succ))
            for u, state in enumerate(snap.users):
                assert got[u] == await _expected_rows(redis, prefix, state.sequence, 2)
            assert m.row_rank.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]  # most recent first
            # row "a" (index 0) has 3 successors (b, c, d): only the top K came back
            assert len(await redis.zrange(f"{prefix}mk:0", 0, -1)) == 3
            assert all(len(row[2]) <= K for rows in got for row in rows)
            assert sum(item == 0 for rows in got for item, _, _ in rows) == 4  # shared
            assert got[4] == []  # no history, no rows
        finally:
            await redis.aclose()

    asyncio.run(go())
