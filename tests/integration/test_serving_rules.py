"""Business rules of the served lists, through a running worker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import orjson
import pytest

from tests.conftest import Pipeline, TopicReader, kafka_producer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(make_pipeline: Callable[..., Pipeline]) -> Iterator[Pipeline]:
    p = make_pipeline(serving={"exclude_recent": 1})
    p.start_worker()
    yield p


class Session:
    def __init__(self, pipeline: Pipeline) -> None:
        self.topics = pipeline.settings.topics
        self.reader = TopicReader(pipeline.settings.kafka.bootstrap, self.topics.recommendations)
        self.producer = kafka_producer(pipeline.settings.kafka.bootstrap)
        self.ts = 1_700_000_000_000

    def event(self, user: str, item: str, kind: str = "view") -> dict:
        """Publish one event and return the list published for it."""
        self.ts += 1000
        event_id = uuid.uuid4().hex
        self.producer.send(getattr(self.topics, kind), key=user.encode(), value=orjson.dumps(
            {"event_id": event_id, "user_id": user, "item_id": item, "type": kind,
             "ts": self.ts}))
        self.producer.flush()
        found = self.reader.poll_until(lambda ms: any(
            orjson.loads(m.value)["trigger"]["event_id"] == event_id for m in ms), 10)
        return next(orjson.loads(m.value) for m in found
                    if orjson.loads(m.value)["trigger"]["event_id"] == event_id)

    def close(self) -> None:
        self.reader.close()
        self.producer.close()


def _ids(message: dict) -> list[str]:
    return [item["item_id"] for item in message["items"]]


def test_a_purchased_item_never_comes_back(pipeline: Pipeline) -> None:
    s = Session(pipeline)
    tag = uuid.uuid4().hex[:6]
    shoe, sock = f"shoe-{tag}", f"sock-{tag}"
    for n in range(3):  # others go shoe -> sock, so sock follows shoe strongly
        s.event(f"other-{tag}-{n}", shoe)
        s.event(f"other-{tag}-{n}", sock)
    buyer = f"buyer-{tag}"
    assert sock in _ids(s.event(buyer, shoe))
    s.event(buyer, sock, "purchase")
    after = [s.event(buyer, shoe), s.event(buyer, f"hat-{tag}"), s.event(buyer, shoe)]
    s.close()
    for message in after:
        assert sock not in _ids(message)


def test_a_blocked_item_disappears_from_every_later_list(pipeline: Pipeline) -> None:
    s = Session(pipeline)
    tag = uuid.uuid4().hex[:6]
    a, b = f"a-{tag}", f"b-{tag}"
    for n in range(3):
        s.event(f"u-{tag}-{n}", a)
        s.event(f"u-{tag}-{n}", b)
    assert b in _ids(s.event(f"probe-{tag}", a))
    result = pipeline.cli("items", "block", b)
    assert result.returncode == 0 and b in result.stdout
    blocked_at = time.time() * 1000
    later = [s.event(f"probe-{tag}-{n}", a) for n in range(4)]
    assert all(m["generated_at"] >= blocked_at for m in later)
    for message in later:
        assert b not in _ids(message)
    pipeline.cli("items", "unblock", b)
    assert b in _ids(s.event(f"again-{tag}", a))
    s.close()


def test_a_new_users_first_event_gets_a_list(pipeline: Pipeline) -> None:
    s = Session(pipeline)
    s.event(f"seed-{uuid.uuid4().hex}", "popular-thing")
    message = s.event(f"newcomer-{uuid.uuid4().hex}", f"never-seen-{uuid.uuid4().hex}")
    s.close()
    assert message["items"], "cold start: trending/popular items"


def test_a_new_item_is_recommendable_as_soon_as_someone_moves_to_it(
        pipeline: Pipeline) -> None:
    s = Session(pipeline)
    tag = uuid.uuid4().hex[:6]
    start, fresh = f"start-{tag}", f"brand-new-{tag}"
    s.event(f"walker-{tag}", start)
    s.event(f"walker-{tag}", fresh)  # first time anyone sees it
    message = s.event(f"follower-{tag}", start)
    s.close()
    assert _ids(message)[0] == fresh
    assert message["items"][0]["reasons"][0] == {
        "kind": "markov", "after": start, "p": message["items"][0]["reasons"][0]["p"]}
