"""Pseudonymous ids: with ``privacy.pseudonym_key`` set, a 5,000-event run of the mix
through a stream and a serving worker leaves no raw user id in any Redis key or value nor
on any topic streamrec writes; whoever holds a raw id (and, on the topic, the key) still
gets that user's list; the key appears in no log."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import Callable

import pytest
from redis import Redis

from recmodels.datasets import synthetic_stream
from streamrec.client import RecommendationReader, pseudonym
from streams.producer import publish
from tests.conftest import Pipeline, TopicReader, applied_count, metric_sum, start_workers

pytestmark = pytest.mark.integration

N = 5000
KEY = f"pk-{uuid.uuid4().hex}"
RAW = b"user-"  # every raw id of the synthetic stream starts so; pseudonyms are hex


def _redis_bytes(pipeline: Pipeline) -> list[tuple[str, bytes]]:
    """Every key under the pipeline's prefix with every byte string it holds."""
    redis = Redis.from_url(pipeline.settings.redis.url)
    out: list[tuple[str, bytes]] = []
    try:
        for raw_key in redis.scan_iter(match=f"{pipeline.settings.redis.prefix}*", count=1000):
            kind = redis.type(raw_key).decode()
            parts: list[bytes] = [raw_key]
            if kind == "string":
                parts.append(redis.get(raw_key) or b"")
            elif kind == "hash":
                for field, value in redis.hgetall(raw_key).items():
                    parts += [field, value]
            elif kind == "set":
                parts += list(redis.smembers(raw_key))
            elif kind == "zset":
                parts += [m for m, _ in redis.zrange(raw_key, 0, -1, withscores=True)]
            elif kind == "list":
                parts += redis.lrange(raw_key, 0, -1)
            out += [(raw_key.decode(errors="replace"), part) for part in parts]
    finally:
        redis.close()
    return out


def test_no_raw_user_id_is_stored_or_published_and_raw_ids_still_get_lists(
        make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(privacy={"pseudonym_key": KEY})
    stream, serving = start_workers((pipeline, "stream"), (pipeline, "serving"))
    events = list(synthetic_stream(N, seed=61))
    asyncio.run(publish(pipeline.settings, events, N))
    deadline = time.monotonic() + 90
    while applied_count(pipeline.settings) < N and time.monotonic() < deadline:
        time.sleep(0.2)
    assert applied_count(pipeline.settings) == N
    users = {e.user_id for e in events}
    while metric_sum(serving, "streamrec_recommendations_total") < len(users) // 2 and \
            time.monotonic() < deadline:
        time.sleep(0.2)

    stored = _redis_bytes(pipeline)
    assert len(stored) > 10_000
    assert [key for key, part in stored if RAW in part] == []
    topics = pipeline.settings.topics
    seen = 0
    for topic in (topics.user_updates, topics.recommendations, topics.dlq,
                  topics.model_updates):
        reader = TopicReader(pipeline.settings.kafka.bootstrap, topic)
        try:
            messages = reader.poll_until(lambda m: False, timeout=3)
        finally:
            reader.close()
        seen += len(messages)
        assert [m.offset for m in messages if RAW in (m.key or b"") + (m.value or b"")] == []
    assert seen > len(users)  # the internal updates and the lists were read

    user = max(users, key=lambda u: (sum(e.user_id == u for e in events), u))
    port = serving.env["STREAMREC_METRICS__PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/recommendations/{user}",
                                timeout=10) as reply:
        pulled = json.loads(reply.read())
    assert pulled["user_id"] == user and pulled["items"]
    with RecommendationReader(pipeline.settings.kafka.bootstrap, topic=topics.recommendations,
                              from_beginning=True, pseudonym_key=KEY) as reader:
        found = reader.wait_for(user, timeout_s=20)
    assert found.user_id == pseudonym(user, KEY.encode())
    assert found.items
    # forgetting takes the raw id too
    done = pipeline.cli("users", "forget", user)
    assert done.returncode == 0, done.stderr
    assert f"forgot {user}: 3 key(s) deleted" in done.stdout
    hidden = pseudonym(user, KEY.encode()).encode()
    assert [key for key, _ in _redis_bytes(pipeline) if hidden in key.encode()] == []
    for worker in (stream, serving):
        assert KEY not in worker.log_tail(1_000_000)
    assert KEY not in done.stdout + done.stderr
