"""Served lists and user vectors written in one script call, read back from a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from redis.asyncio import Redis

from streamrec.state.keys import Keys
from streamrec.state.reader import ServingStateReader
from streamrec.state.user_writes import UserWriter
from tests.conftest import StackInfo

pytestmark = pytest.mark.integration


def test_served_lists_and_vectors_land_on_each_users_keys(stack: StackInfo) -> None:
    async def go() -> None:
        redis = Redis.from_url(stack.redis_url)
        keys = Keys(f"w{uuid.uuid4().hex[:6]}:")
        try:
            for user in ("ann", "bob:x", "cy"):  # users with state (the state step's)
                await redis.hset(keys.user(user), "n", 1)  # type: ignore[misc]
            vectors = {"ann": np.array([0.5, -1.25], dtype=np.float32),
                       "bob:x": np.array([3.0, 4.0], dtype=np.float32)}
            await UserWriter(redis, keys).write(
                {"ann": [7, 0, 42], "cy": [], "gone": [1]}, 600,
                {**vectors, "gone": np.array([1.0, 1.0], dtype=np.float32)}, "sasrec-0003")
            assert np.frombuffer(await redis.get(keys.served("ann")), "<u4").tolist() == \
                [7, 0, 42]
            assert await redis.get(keys.served("cy")) == b""  # an empty list is stored too
            assert 590 <= await redis.ttl(keys.served("ann")) <= 600
            assert await redis.exists(keys.served("bob:x")) == 0  # a vector, no list
            for user, vector in vectors.items():
                emb, ver = await redis.hmget(keys.user(user), "emb", "ver")
                np.testing.assert_array_equal(np.frombuffer(emb, "<f4"), vector)
                assert ver == b"sasrec-0003"
            assert await redis.hget(keys.user("ann"), "n") == b"1"  # other fields untouched
            # serving never makes a user: one without state (forgotten meanwhile) gets
            # neither a served list nor a vector
            assert await redis.exists(keys.user("gone"), keys.served("gone")) == 0
        finally:
            await redis.aclose()

    asyncio.run(go())


def test_remember_served_keeps_only_lists(stack: StackInfo) -> None:
    async def go() -> None:
        redis = Redis.from_url(stack.redis_url)
        keys = Keys(f"w{uuid.uuid4().hex[:6]}:")
        try:
            reader = ServingStateReader(redis, keys, history=3, row_size=10, popular=5)
            await redis.hset(keys.user("dee"), "n", 1)  # type: ignore[misc]
            await reader.remember_served({"dee": [1, 2]}, 60)
            assert np.frombuffer(await redis.get(keys.served("dee")), "<u4").tolist() == [1, 2]
            assert await redis.hkeys(keys.user("dee")) == [b"n"]  # type: ignore[misc]
        finally:
            await redis.aclose()

    asyncio.run(go())
