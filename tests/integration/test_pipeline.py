"""The event path through a running worker: real Tansu broker, real Redis, kafka-python client."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable, Iterator

import orjson
import pytest
from redis.asyncio import Redis

from streamrec.contracts.recommendation import validate
from streamrec.state.keys import Keys
from tests.conftest import Pipeline, TopicReader, kafka_producer, metric_sum

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(make_pipeline: Callable[..., Pipeline]) -> Iterator[Pipeline]:
    p = make_pipeline()
    p.start_worker()
    yield p


def _recs_for(reader: TopicReader, user: str, timeout: float) -> list[dict]:
    reader.poll_until(lambda ms: any(orjson.loads(m.value)["user_id"] == user for m in ms),
                      timeout)
    return [v for v in reader.values() if v["user_id"] == user]


def _lag_topics(pipeline: Pipeline, timeout: float) -> set[str]:
    """The topics with a ``streamrec_consumer_lag_messages`` series (exported every
    ``lag_interval_s``)."""
    import re
    import urllib.request

    port = pipeline.workers[0].env["STREAMREC_METRICS__PORT"]
    deadline = time.monotonic() + timeout
    topics: set[str] = set()
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        topics = set(re.findall(r'^streamrec_consumer_lag_messages\{[^}]*topic="([^"]+)"',
                                text.decode(), flags=re.M))
        if len(topics) >= 3:
            break
        time.sleep(0.5)
    return topics


def _item_count(pipeline: Pipeline) -> int:
    async def read() -> int:
        redis = Redis.from_url(pipeline.settings.redis.url)
        try:
            return int(await redis.llen(Keys(pipeline.settings.redis.prefix).item_ids))
        finally:
            await redis.aclose()

    return asyncio.run(read())


def test_new_user_view_gets_v1_recommendation_within_5_seconds(pipeline: Pipeline) -> None:
    t = pipeline.settings.topics
    reader = TopicReader(pipeline.settings.kafka.bootstrap, t.recommendations)
    producer = kafka_producer(pipeline.settings.kafka.bootstrap)
    # some history so a brand-new user has something to be recommended
    for i, item in enumerate(["warm-a", "warm-b", "warm-c"]):
        producer.send(t.view, key=b"warm-user", value=orjson.dumps(
            {"user_id": "warm-user", "item_id": item, "type": "view", "ts": 1_700_000_000_000 + i}))
    producer.flush()
    _recs_for(reader, "warm-user", 10)

    user = f"brand-new-{uuid.uuid4().hex[:6]}"
    start = time.monotonic()
    producer.send(t.view, key=user.encode(), value=orjson.dumps(
        {"event_id": "e-first", "user_id": user, "item_id": "warm-a", "type": "view",
         "ts": int(time.time() * 1000)}))
    producer.flush()
    recs = _recs_for(reader, user, 5)
    elapsed = time.monotonic() - start
    reader.close()
    producer.close()

    assert recs, "no recommendation for the new user within 5 s"
    assert elapsed < 5
    message = recs[0]
    assert validate(message) == []
    assert message["trigger"]["event_id"] == "e-first"
    ids = [item["item_id"] for item in message["items"]]
    assert ids, "a new user gets a non-empty list"
    assert "warm-a" not in ids, "the item just seen is never recommended"
    assert ids[0] == "warm-b"  # warm-a -> warm-b is the only observed transition
    # P(warm-b | warm-a) with additive smoothing alpha over the catalogue (Markov row
    # warm-a: one view of warm-b, weight 1)
    alpha = pipeline.settings.serving.markov_smoothing
    n_items = _item_count(pipeline)
    assert message["items"][0]["reasons"][0] == {
        "kind": "markov", "after": "warm-a",
        "p": pytest.approx((1 + alpha) / (1 + alpha * n_items), rel=1e-4)}


MALFORMED: list[tuple[str, str, bytes, str, str]] = [
    # (name, topic attr, payload, expected reason, expected field)
    ("not json", "view", b"{not json", "not_json", ""),
    ("json array", "view", b'[{"user_id": "u"}]', "not_object", ""),
    ("missing user_id", "view", orjson.dumps({"item_id": "i", "type": "view"}),
     "missing_field", "user_id"),
    ("empty item_id", "view", orjson.dumps({"user_id": "u", "item_id": "", "type": "view"}),
     "empty_field", "item_id"),
    ("unknown type", "view", orjson.dumps({"user_id": "u", "item_id": "i", "type": "like"}),
     "unknown_type", "type"),
    ("ts no date", "view", orjson.dumps({"user_id": "u", "item_id": "i", "type": "view",
                                         "ts": "yesterday"}), "bad_timestamp", "ts"),
    ("20 KiB", "view", orjson.dumps({"user_id": "u", "item_id": "i", "type": "view",
                                     "session_id": "x", "pad": "y" * 20 * 1024}),
     "too_large", ""),
    ("control char", "view", orjson.dumps({"user_id": "u\x07x", "item_id": "i",
                                           "type": "view"}), "control_character", "user_id"),
    ("type vs topic", "click", orjson.dumps({"user_id": "u", "item_id": "i", "type": "view"}),
     "type_mismatch", "type"),
    ("props 4 KiB", "view", orjson.dumps({"user_id": "u", "item_id": "i", "type": "view",
                                          "props": {"blob": "z" * 4200}}),
     "props_too_large", "props"),
]


def test_ten_malformed_kinds_each_give_one_dlq_record(pipeline: Pipeline) -> None:
    t = pipeline.settings.topics
    dlq = TopicReader(pipeline.settings.kafka.bootstrap, t.dlq)
    recs = TopicReader(pipeline.settings.kafka.bootstrap, t.recommendations)
    producer = kafka_producer(pipeline.settings.kafka.bootstrap)
    valid_users = []
    for n, (_, topic_attr, payload, _, _) in enumerate(MALFORMED):
        producer.send(getattr(t, topic_attr), key=b"bad", value=payload)
        user = f"between-{n}-{uuid.uuid4().hex[:4]}"
        valid_users.append(user)
        producer.send(t.click, key=user.encode(), value=orjson.dumps(
            {"user_id": user, "item_id": f"item-{n}", "type": "click"}))
    producer.flush()

    dlq.poll_until(lambda ms: len(ms) >= len(MALFORMED), 20)
    time.sleep(1.0)  # anything extra (a second record for one message) would show up now
    dlq.poll_until(lambda ms: False, 0.5)
    records = dlq.values()
    assert len(records) == len(MALFORMED)
    payloads = {base64.b64decode(r["raw"]): r for r in records}
    for name, topic_attr, payload, reason, field in MALFORMED:
        record = payloads[payload]
        assert (record["reason"], record["field"]) == (reason, field), name
        assert record["source"]["topic"] == getattr(t, topic_attr)
        assert isinstance(record["source"]["offset"], int)
        assert record["detail"]

    seen = recs.poll_until(
        lambda ms: {orjson.loads(m.value)["user_id"] for m in ms} >= set(valid_users), 20)
    assert {orjson.loads(m.value)["user_id"] for m in seen} >= set(valid_users)
    assert pipeline.workers[0].running, "the worker kept running"
    for reader in (dlq, recs):
        reader.close()
    producer.close()




def test_online_hit_rate_counts_a_followed_recommendation(pipeline: Pipeline) -> None:
    t = pipeline.settings.topics
    reader = TopicReader(pipeline.settings.kafka.bootstrap, t.recommendations)
    producer = kafka_producer(pipeline.settings.kafka.bootstrap)
    user = f"follower-{uuid.uuid4().hex[:6]}"
    hits, evaluations = (metric_sum(pipeline.workers[0], "streamrec_online_hits_total"),
                         metric_sum(pipeline.workers[0], "streamrec_online_evaluations_total"))
    producer.send(t.view, key=user.encode(), value=orjson.dumps(
        {"user_id": user, "item_id": "warm-a", "type": "view", "ts": 1_700_000_100_000}))
    producer.flush()
    first = _recs_for(reader, user, 10)[0]
    suggested = first["items"][0]["item_id"]
    producer.send(t.view, key=user.encode(), value=orjson.dumps(
        {"user_id": user, "item_id": suggested, "type": "view", "ts": 1_700_000_200_000}))
    producer.flush()
    reader.poll_until(lambda ms: sum(orjson.loads(m.value)["user_id"] == user for m in ms) >= 2,
                      10)
    reader.close()
    producer.close()
    assert metric_sum(pipeline.workers[0], "streamrec_online_evaluations_total") == evaluations + 1
    assert metric_sum(pipeline.workers[0], "streamrec_online_hits_total") == hits + 1
    assert _lag_topics(pipeline, 12) >= {t.view, t.click, t.purchase}, \
        "consumer lag is exported for every input topic"
    assert metric_sum(pipeline.workers[0], 'streamrec_stage_seconds_count') > 0
    # the broker's share is visible: every batch observes how long its fetch took
    assert metric_sum(pipeline.workers[0], 'streamrec_stage_seconds_count{stage="fetch"}') > 0
