"""Erasure on request, mid-stream, by the command line and by the ``privacy.erasure``
topic: within 1 s no Redis key names the user, the recommendations topic carries a
tombstone for them, the state dump does not know them, a replay of their earlier events
does not bring them back, and a new event starts a fresh profile."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis import Redis

from recmodels.datasets import Interaction, synthetic_stream
from streamrec.client import EventProducer
from streams.producer import publish
from tests.conftest import (
    Pipeline,
    TopicReader,
    applied_count,
    kafka_producer,
    metric_sum,
    state_of,
)

pytestmark = pytest.mark.integration

N, RATE = 6000, 1500.0


def _keys_naming(pipeline: Pipeline, user: str) -> list[str]:
    redis = Redis.from_url(pipeline.settings.redis.url)
    try:
        prefix = pipeline.settings.redis.prefix
        return [k.decode() for k in redis.scan_iter(match=f"{prefix}*", count=1000)
                if user in k.decode().split(":")]
    finally:
        redis.close()


def _wait(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Seconds until ``condition`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within {timeout} s"
        time.sleep(step)
    return time.monotonic() - started


def _tombstone_for(pipeline: Pipeline, user: str) -> bool:
    reader = TopicReader(pipeline.settings.kafka.bootstrap,
                         pipeline.settings.topics.recommendations)
    try:
        messages = reader.poll_until(
            lambda m: any(x.key == user.encode() and x.value is None for x in m), timeout=15)
    finally:
        reader.close()
    mine = [m for m in messages if m.key == user.encode()]
    return bool(mine) and mine[-1].value is None


def _mid_stream(pipeline: Pipeline, forget: Callable[[str], Any]) -> tuple[str, float]:
    """Publish the mix live; once it is under way, forget its most active user so far.
    Returns the user and the seconds until no key named them."""
    events = list(synthetic_stream(N, seed=53))
    publisher = threading.Thread(
        target=lambda: asyncio.run(publish(pipeline.settings, events, N, rate=RATE)))
    publisher.start()
    _wait(lambda: applied_count(pipeline.settings) >= N // 3, timeout=60)
    users = state_of(pipeline.settings)["users"]
    user = max(users, key=lambda u: (users[u]["events"], u))
    assert _keys_naming(pipeline, user), "the user has state before"
    started = time.monotonic()
    forget(user)
    _wait(lambda: not _keys_naming(pipeline, user), timeout=10)
    gone_after = time.monotonic() - started
    publisher.join()  # the rest of the stream, with more of this user's earlier events
    _wait(lambda: applied_count(pipeline.settings) + 50 >= N, timeout=60)
    time.sleep(1.0)
    return user, gone_after


def _check_forgotten(pipeline: Pipeline, user: str) -> None:
    assert _keys_naming(pipeline, user) == []
    assert user not in state_of(pipeline.settings)["users"]
    assert _tombstone_for(pipeline, user)
    # a replay of all their earlier events does not bring them back
    theirs = [e for e in synthetic_stream(N, seed=53) if e.user_id == user]
    assert len(theirs) > 5
    asyncio.run(publish(pipeline.settings, theirs, len(theirs)))
    time.sleep(2.0)
    assert _keys_naming(pipeline, user) == []
    # a new event starts a fresh profile
    with EventProducer(kafka=pipeline.settings.kafka, topics=pipeline.settings.topics) as p:
        p.send(user, "item-7", "click")
    _wait(lambda: user in state_of(pipeline.settings)["users"], timeout=10)
    fresh = state_of(pipeline.settings)["users"][user]
    assert (fresh["events"], fresh["sequence"], fresh["bought"]) == (1, ["item-7"], [])


def test_forget_mid_stream_by_the_topic_within_a_second_then_by_the_command_line(
        make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline()
    worker = pipeline.start_worker()
    producer = kafka_producer(pipeline.settings.kafka.bootstrap)

    def forget(user: str) -> None:
        producer.send(pipeline.settings.topics.erasure, key=user.encode(), value=b"{}")
        producer.flush()

    try:
        user, gone_after = _mid_stream(pipeline, forget)
    finally:
        producer.close()
    assert gone_after <= 1.0
    _check_forgotten(pipeline, user)
    assert metric_sum(worker, "streamrec_erased_users_total") == 1
    assert metric_sum(worker, "streamrec_erased_events_total") > 0
    # the command line, for the next most active user (it returns after its second
    # tombstone; its start-up takes seconds, the 1 s bound is the topic's)
    users = state_of(pipeline.settings)["users"]
    other = max((u for u in users if u != user), key=lambda u: (users[u]["events"], u))
    done = pipeline.cli("users", "forget", other)
    assert done.returncode == 0, done.stderr
    assert f"forgot {other}: 3 key(s) deleted" in done.stdout
    _check_forgotten(pipeline, other)


def test_an_erasure_of_a_user_without_state_is_recorded_too(
        make_pipeline: Callable[..., Pipeline]) -> None:
    """Forgotten before their events arrive: those events (older than the erasure) never
    make a profile."""
    pipeline = make_pipeline()
    done = pipeline.cli("users", "forget", "early")
    assert done.returncode == 0, done.stderr
    assert "forgot early: 0 key(s) deleted" in done.stdout
    pipeline.start_worker()
    old = [Interaction(f"o{k}", "early", f"i{k}", "view", 1_600_000_000_000 + k)
           for k in range(5)]
    other = [Interaction("x1", "someone", "i1", "view", 1_600_000_000_000)]
    asyncio.run(publish(pipeline.settings, old + other, 6))
    _wait(lambda: "someone" in state_of(pipeline.settings)["users"], timeout=30)
    time.sleep(0.5)
    assert "early" not in state_of(pipeline.settings)["users"]
    assert _keys_naming(pipeline, "early") == []
