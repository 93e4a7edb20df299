"""Serving's read sent ahead (role all) against a real Redis: the same state as a plain read,
and a script lost by Redis (restart, SCRIPT FLUSH) fails one read ahead, not the next."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from streamrec.contracts.event import Event
from streamrec.kernel.settings import StateSettings
from streamrec.state.keys import Keys
from streamrec.state.reader import ServingStateReader, Snapshot
from streamrec.state.store import ApplyConfig, Positioned, RedisStateStore
from tests.conftest import StackInfo

pytestmark = pytest.mark.integration

USERS = ["ann", "bob", "nobody"]


def _fields(snap: Snapshot) -> tuple[object, ...]:
    m = snap.markov
    return (snap.n_items, snap.popular, snap.blocked,
            [(u.user_id, u.sequence, sorted(u.bought), u.vector) for u in snap.users],
            [c.tolist() for c in (m.row_user, m.row_rank, m.row_item, m.row_total,
                                  m.succ_row, m.succ_item, m.succ_count)])


async def _with_state(stack: StackInfo) -> tuple[Redis, ServingStateReader]:
    redis = Redis.from_url(stack.redis_url)
    prefix = f"ra{uuid.uuid4().hex[:6]}:"
    spec = [("ann", "a", "view"), ("ann", "b", "view"), ("bob", "a", "view"),
            ("bob", "b", "purchase"), ("ann", "c", "view"), ("bob", "c", "view")]
    events = [Positioned("ev", 0, n, Event(f"id-{n}", user, item, kind, 1_000 + n))
              for n, (user, item, kind) in enumerate(spec)]
    store = RedisStateStore(redis, ApplyConfig.from_settings(
        prefix, "g", StateSettings(popularity_half_life_s=0)))
    await store.apply(events)
    return redis, ServingStateReader(redis, Keys(prefix), history=3, row_size=10, popular=5)


def test_a_read_sent_ahead_gives_what_a_plain_read_gives(stack: StackInfo) -> None:
    async def go() -> None:
        redis, reader = await _with_state(stack)
        try:
            ahead = await reader.read_ahead(USERS)
            plain = await reader.read(USERS, vectors=False)
            snap = await ahead
            assert _fields(snap) == _fields(plain)
            assert [u.sequence for u in snap.users] == [[0, 1, 2], [0, 1, 2], []]
            assert len(snap.markov.row_user) > 0  # Markov rows came back, not just users
            assert redis.connection_pool._in_use_connections == set()
        finally:
            await redis.aclose()

    asyncio.run(go())


def test_a_script_flushed_by_redis_fails_one_read_ahead_then_is_loaded_again(
        stack: StackInfo) -> None:
    async def go() -> None:
        redis, reader = await _with_state(stack)
        try:
            await (await reader.read_ahead(USERS))  # loads the script
            await redis.script_flush()
            with pytest.raises(NoScriptError):
                await (await reader.read_ahead(USERS))
            snap = await (await reader.read_ahead(USERS))
            assert [u.user_id for u in snap.users] == USERS
            assert redis.connection_pool._in_use_connections == set()
        finally:
            await redis.aclose()

    asyncio.run(go())
