"""`streamrec state dump` after a small hand-made replay equals hand-computed values."""

from __future__ import annotations

import json
from collections.abc import Callable

import orjson
import pytest

from tests.conftest import Pipeline, TopicReader, kafka_producer

pytestmark = pytest.mark.integration

H = 7 * 86400 * 1000  # the default popularity half-life, in ms
T0 = 1_700_000_000_000

EVENTS = [  # (user, item, type, ts)
    ("alice", "a", "view", T0),
    ("alice", "b", "view", T0 + H),
    ("alice", "c", "purchase", T0 + 2 * H),
    ("bob", "a", "click", T0 + 2 * H),
    ("bob", "b", "view", T0 + 3 * H),
    ("bob", "b", "purchase", T0 + 3 * H),  # a repeat of b: bought, but no transition
]

# weights view 1, click 2, purchase 4; a transition counts the weight of its later event
EXPECTED_MARKOV = {
    "a": {"total": 2, "next": {"b": 2}},  # alice a->b (view 1) + bob a->b (view 1)
    "b": {"total": 4, "next": {"c": 4}},  # alice b->c (purchase 4)
}
# popularity at the latest event time (T0 + 3H): sum of w * 2^((ts - T0 - 3H) / H)
EXPECTED_POPULARITY = {
    "a": 1 * 2**-3 + 2 * 2**-1,  # 1.125
    "b": 1 * 2**-2 + 1 + 4,  # 5.25
    "c": 4 * 2**-1,  # 2
}


def test_state_dump_equals_hand_computed_values(make_pipeline: Callable[..., Pipeline],
                                                tmp_path) -> None:
    pipeline = make_pipeline()
    pipeline.start_worker()
    t = pipeline.settings.topics
    producer = kafka_producer(pipeline.settings.kafka.bootstrap)
    recs = TopicReader(pipeline.settings.kafka.bootstrap, t.recommendations)
    for n, (user, item, kind, ts) in enumerate(EVENTS):
        event_id = f"hand-{n}"
        producer.send(getattr(t, kind), key=user.encode(), value=orjson.dumps(
            {"event_id": event_id, "user_id": user, "item_id": item, "type": kind, "ts": ts}))
        producer.flush()
        # wait until applied (its recommendation is out), so the order is the one above
        recs.poll_until(lambda ms, e=event_id: any(
            orjson.loads(m.value)["trigger"]["event_id"] == e for m in ms), 15)
    recs.close()
    producer.close()

    out = tmp_path / "state.json"
    result = pipeline.cli("state", "dump", "--out", str(out))
    assert result.returncode == 0, result.stderr
    state = json.loads(out.read_text())

    assert state["items"] == ["a", "b", "c"]
    assert state["markov"] == EXPECTED_MARKOV
    assert state["popularity"] == pytest.approx(EXPECTED_POPULARITY, rel=1e-9)
    assert state["popularity_at_ts"] == T0 + 3 * H
    assert state["users"] == {
        "alice": {"sequence": ["a", "b", "c"], "events": 3, "last_ts": T0 + 2 * H,
                  "bought": ["c"]},
        "bob": {"sequence": ["a", "b"], "events": 3, "last_ts": T0 + 3 * H, "bought": ["b"]},
    }
    # canonical: sorted keys, so two dumps of the same state are byte-identical
    second = pipeline.cli("state", "dump")
    assert second.stdout.strip() == out.read_text().strip()
