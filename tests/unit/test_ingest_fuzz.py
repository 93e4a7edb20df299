"""Fuzzing the ingest agent body: it never raises, and every message ends up in exactly
one place: the events topic (valid) or the DLQ with a reason (invalid).

Faust's event and topic are replaced by small recording doubles here: this is a unit test
of the agent's logic; integration tests drive the same code through a real broker.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.agents import ingest

TOPICS = {"events.view": "view", "events.click": "click", "events.purchase": "purchase"}


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    timestamp: float
    refs: int = 0

    def incref(self) -> None:
        self.refs += 1


@dataclass
class Ev:
    message: Msg
    value: Any
    acks: int = 0

    def ack(self) -> bool:
        self.acks += 1
        return True


@dataclass
class Recorder:
    sent: list[tuple[Any, bytes]] = field(default_factory=list)

    async def send(self, key: Any = None, value: bytes = b"") -> None:
        self.sent.append((key, value))


async def _one_batch(batch: Sequence[Ev]) -> AsyncIterator[Sequence[Ev]]:
    yield batch


values = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                   st.floats(allow_nan=True), st.text(max_size=30),
                   st.lists(st.integers(), max_size=3),
                   st.dictionaries(st.text(max_size=4), st.integers(), max_size=3))
bodies = st.dictionaries(st.sampled_from(["user_id", "item_id", "type", "ts", "event_id",
                                          "props", "session_id", "extra"]), values)
typed = st.fixed_dictionaries({"user_id": st.text(min_size=1, max_size=20),
                               "item_id": st.text(min_size=1, max_size=20),
                               "type": st.sampled_from(["view", "click", "purchase", "View"]),
                               "ts": st.one_of(st.integers(0, 2**45),
                                               st.just("2024-01-02T03:04:05Z"))})
raw = st.one_of(st.binary(max_size=200), bodies.map(lambda b: json.dumps(b).encode()),
                typed.map(lambda b: json.dumps(b).encode()), st.none(),
                st.integers(1, 40).map(lambda n: b"x" * (n * 1024)))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(sorted(TOPICS)), raw), min_size=1, max_size=5))
def test_every_message_goes_to_exactly_one_place(messages: list[tuple[str, Any]]) -> None:
    batch = [Ev(Msg(topic, 0, offset, 1700000000.0), value)
             for offset, (topic, value) in enumerate(messages)]
    events, dlq = Recorder(), Recorder()
    asyncio.run(ingest(_one_batch(batch), TOPICS, events, dlq))  # never raises

    assert len(events.sent) + len(dlq.sent) == len(messages)
    for _, value in dlq.sent:
        record = orjson.loads(value)
        assert record["reason"] and record["detail"]
        assert record["source"]["topic"] in TOPICS
        original = messages[record["source"]["offset"]][1]
        assert base64.b64decode(record["raw"]) == (original or b"")
    for key, value in events.sent:
        event = orjson.loads(value)
        assert key == event["user_id"].encode()
        assert event["type"] in ("view", "click", "purchase")
    # every message was held during the batch and released after it
    assert all(ev.message.refs == 1 and ev.acks == 1 for ev in batch)


def test_a_batch_cut_short_stays_unacknowledged() -> None:
    """Worker stopping while Redis is down: the state batch is cancelled mid-apply; its
    messages keep their extra reference, so Faust never commits their offsets."""
    from streams.agents import apply_state
    from streams.events import Event

    class StuckStore:
        async def apply(self, batch: Any) -> Any:
            await asyncio.sleep(3600)

    batch = [Ev(Msg("streamrec.events", 0, n, 1.0),
                Event(f"e{n}", "u", "i", "view", n).to_json()) for n in range(3)]

    async def run() -> None:
        task = asyncio.create_task(apply_state(_one_batch(batch), StuckStore(), Recorder()))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert all(ev.message.refs == 1 and ev.acks == 0 for ev in batch)
