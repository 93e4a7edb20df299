"""Keys that streamrec did not write that way (a corrupted value, a key of the wrong type)
do not stop the worker: the state step starts such a user anew and counts it, serving
reads what makes sense, and every user still gets a list."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable

import pytest
from redis import Redis

from recmodels.datasets import Interaction
from streams.producer import publish
from tests.conftest import Pipeline, applied_count, metric_sum, state_of

pytestmark = pytest.mark.integration

USERS = ("cut-seq", "not-a-hash", "bad-window", "bought-string", "bad-vector")


def _events(start: int, kind: str = "view") -> list[Interaction]:
    return [Interaction(f"{user}-{start + k}", user, f"i{(start + k) % 7}", kind,
                        1_600_000_000_000 + 1000 * (start + k))
            for user in USERS for k in range(3)]


def test_corrupted_user_keys_are_started_anew_and_the_worker_goes_on(
        make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline()
    worker = pipeline.start_worker()
    first = _events(0)
    asyncio.run(publish(pipeline.settings, first, len(first)))
    deadline = time.monotonic() + 30
    while applied_count(pipeline.settings) < len(first) and time.monotonic() < deadline:
        time.sleep(0.1)
    prefix = pipeline.settings.redis.prefix
    redis = Redis.from_url(pipeline.settings.redis.url)
    try:
        redis.hset(f"{prefix}u:cut-seq", "seq", b"\x01\x02\x03")
        redis.delete(f"{prefix}u:not-a-hash")
        redis.set(f"{prefix}u:not-a-hash", "garbage")
        redis.hset(f"{prefix}u:bad-window", mapping={"win": b"\x00" * 5, "n": "many"})
        redis.set(f"{prefix}u:bought-string:bought", "garbage")
        redis.hset(f"{prefix}u:bad-vector", mapping={"emb": b"\x00" * 7, "seq": b"\xff" * 8})
        redis.delete(f"{prefix}served:bad-vector")
        redis.rpush(f"{prefix}served:bad-vector", "x")
    finally:
        redis.close()
    port = worker.env["STREAMREC_METRICS__PORT"]
    for user in USERS:  # serving reads them as they are: no error
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/recommendations/{user}",
                                    timeout=10) as reply:
            assert json.loads(reply.read())["user_id"] == user
    second = _events(10, "purchase")
    asyncio.run(publish(pipeline.settings, second, len(second)))
    deadline = time.monotonic() + 30
    while applied_count(pipeline.settings) < len(first) + len(second) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert applied_count(pipeline.settings) == len(first) + len(second)
    assert worker.running, worker.log_tail()
    users = state_of(pipeline.settings)["users"]
    for user in ("cut-seq", "not-a-hash", "bad-window"):  # started anew with the new events
        assert users[user]["events"] == 3, (user, users[user])
        assert users[user]["sequence"] == [f"i{(10 + k) % 7}" for k in range(3)]
    assert sorted(users["bought-string"]["bought"]) == sorted({f"i{(10 + k) % 7}"
                                                               for k in range(3)})
    assert users["bad-vector"]["events"] == 6  # its hash was whole: kept
    assert metric_sum(worker, "streamrec_corrupted_user_state_total") == 4
    assert "corrupted user state found" in worker.log_tail(20_000)
