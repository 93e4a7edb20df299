"""The users in Redis: one scan of the user hashes (the bought sets skipped) and their
sequences, as the state dump and the trainer read them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from streamrec.contracts.event import Event
from streamrec.kernel.settings import StateSettings
from streamrec.state.keys import Keys
from streamrec.state.store import ApplyConfig, Positioned, RedisStateStore
from streamrec.state.users import read_sequences, user_ids
from tests.conftest import StackInfo

pytestmark = pytest.mark.integration

EVENTS = [("bob", "b", "view"), ("alice", "a", "view"), ("alice", "b", "purchase"),
          ("bob", "c", "purchase"), ("carol:x", "a", "view")]


def test_user_ids_skip_the_bought_sets_and_sequences_are_item_ids(stack: StackInfo) -> None:
    async def go() -> tuple[list[str], tuple[list[str], dict[str, list[str]]]]:
        redis = Redis.from_url(stack.redis_url)
        keys = Keys(f"s{uuid.uuid4().hex[:6]}:")
        other = Keys(keys.prefix + "o:")  # another prefix: none of its users are ours
        try:
            for prefix in (keys.prefix, other.prefix):
                store = RedisStateStore(redis, ApplyConfig.from_settings(prefix, "g",
                                                                         StateSettings()))
                await store.apply([Positioned("events.view", 0, n, Event(f"e{n}", u, i, k, n))
                                   for n, (u, i, k) in enumerate(EVENTS)])
            return await user_ids(redis, keys), await read_sequences(redis, keys)
        finally:
            await redis.aclose()

    users, (ids, sequences) = asyncio.run(go())
    assert users == ["alice", "bob", "carol:x"]
    assert ids == ["b", "a", "c"]
    assert sequences == {"alice": ["a", "b"], "bob": ["b", "c"], "carol:x": ["a"]}
