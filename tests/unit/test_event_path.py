"""The event-path agent body: fuzzed, it never raises and every message ends up in exactly
one place: the state step (valid) or the DLQ with a reason (invalid); a batch is
acknowledged only after everything it produced was delivered.

The producer and the state store are replaced by small recording doubles here: this is a
unit test of the path's logic; integration tests drive the same code through a real broker
and Redis.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import ConsumerRecord, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrec.kernel.consumer import Batch, DoneOffsets, Record
from streamrec.kernel.outbox import Outbox
from streamrec.state.store import ApplyResult, Positioned
from streams.pipeline import EventPath, process_events, publish_updates

TOPICS = {"events.view": "view", "events.click": "click", "events.purchase": "purchase"}


def rec(topic: str, offset: int, value: Any, ts_ms: int = 1_700_000_000_000,
        partition: int = 0) -> Record:
    return ConsumerRecord(topic, partition, offset, ts_ms, 0, None, value, None, 0, 0, ())


@dataclass
class Recorder:
    """A producer double: records what was sent, and whether it was delivered (flushed)."""

    sent: list[tuple[str, Any, bytes]] = field(default_factory=list)
    delivered: int = 0

    async def send(self, topic: str, key: Any, value: Any, partition: Any, timestamp: Any,
                   headers: Any) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda _: setattr(self, "delivered", self.delivered + 1))
        asyncio.get_running_loop().call_soon(done.set_result, None)
        return done

    def of(self, topic: str) -> list[tuple[str, Any, bytes]]:
        return [s for s in self.sent if s[0] == topic]


@dataclass
class RecordingStore:
    batches: list[list[Positioned]] = field(default_factory=list)

    async def apply(self, batch: Any, progress: Any = None) -> ApplyResult:
        self.batches.append(list(batch))
        # every user of the batch touched (none forgotten), as the state step says
        return ApplyResult(len(batch), 0, 0, 0,
                           sequences={p.event.user_id: b"" for p in batch})


def _path(store: Any, producer: Recorder) -> EventPath:
    async def started() -> Recorder:
        return producer
    outbox = Outbox(started)  # type: ignore[arg-type]
    return EventPath(TOPICS, store, outbox, "events.dlq",
                     publish_updates("streamrec.user-updates"))


async def _one_batch(batch: Batch) -> AsyncIterator[Batch]:
    yield batch


def _run(batch: Batch, store: Any, producer: Recorder, done: DoneOffsets) -> None:
    asyncio.run(process_events(_one_batch(batch), _path(store, producer), done.acknowledge))


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
    batch = [rec(topic, offset, value) for offset, (topic, value) in enumerate(messages)]
    producer, store, done = Recorder(), RecordingStore(), DoneOffsets()
    _run(batch, store, producer, done)  # never raises

    applied = [p for b in store.batches for p in b]
    dlq = producer.of("events.dlq")
    assert len(applied) + len(dlq) == len(messages)
    for _, _, value in dlq:
        record = orjson.loads(value)
        assert record["reason"] and record["detail"]
        assert record["reason"] != "internal_error", record["detail"]  # a rule, not a bug
        assert record["source"]["topic"] in TOPICS
        assert record["source"]["partition"] == 0
        assert isinstance(record["field"], str)
        original = messages[record["source"]["offset"]][1]
        assert base64.b64decode(record["raw"]) == (original or b"")
    for p in applied:
        assert p.topic in TOPICS and messages[p.offset][0] == p.topic
        assert p.event.type in ("view", "click", "purchase")
    # one update per distinct user of the batch, keyed by user
    updates = producer.of("streamrec.user-updates")
    assert sorted(k for _, k, _ in updates) == sorted({p.event.user_id.encode() for p in applied})
    assert producer.delivered == len(producer.sent)
    # the whole batch is done: each partition's offset to commit is past its last record
    last = {TopicPartition(r.topic, r.partition): r.offset + 1 for r in batch}
    assert done.take(set(last)) == last


def test_a_batch_cut_short_stays_unacknowledged() -> None:
    """Worker stopping while Redis is down: the state batch is cancelled mid-apply; its
    offsets are never committed, so the batch is delivered again after the restart."""

    class StuckStore:
        async def apply(self, batch: Any, progress: Any = None) -> Any:
            await asyncio.sleep(3600)

    batch = [rec("events.view", n, orjson.dumps({"user_id": "u", "item_id": "i", "ts": n}))
             for n in range(3)]
    done = DoneOffsets()

    async def run() -> None:
        task = asyncio.create_task(process_events(_one_batch(batch),
                                                  _path(StuckStore(), Recorder()),
                                                  done.acknowledge))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert done.take({TopicPartition("events.view", 0)}) == {}


def test_a_batch_is_acknowledged_only_after_its_records_are_delivered() -> None:
    """The broker has not acknowledged the DLQ record and the user update yet: the input
    messages stay unacknowledged until it does."""
    gate: list[asyncio.Future[None]] = []

    class SlowBroker(Recorder):
        async def send(self, topic: str, key: Any, value: Any, partition: Any, timestamp: Any,
                       headers: Any) -> asyncio.Future[None]:
            self.sent.append((topic, key, value))
            gate.append(asyncio.get_running_loop().create_future())
            return gate[-1]

    batch = [rec("events.view", 0, b"not json"),
             rec("events.view", 1, orjson.dumps({"user_id": "u", "item_id": "i", "ts": 5}))]
    acknowledged: list[Batch] = []
    tp = TopicPartition("events.view", 0)

    async def run() -> tuple[int, dict[TopicPartition, int]]:
        done = DoneOffsets()

        def acknowledge(b: Batch) -> None:
            acknowledged.append(b)
            done.acknowledge(b)
        task = asyncio.create_task(process_events(_one_batch(batch),
                                                  _path(RecordingStore(), SlowBroker()),
                                                  acknowledge))
        await asyncio.sleep(0.05)
        before = len(acknowledged)
        for future in gate:
            future.set_result(None)
        await task
        return before, done.take({tp})

    before, committed = asyncio.run(run())
    assert len(gate) == 2  # one DLQ record, one user update
    assert before == 0
    assert committed == {tp: 2}


def test_offsets_move_forward_and_revoked_partitions_are_not_committed() -> None:
    done = DoneOffsets()
    done.acknowledge([rec("events.view", 4, b""), rec("events.view", 9, b""),
                      rec("events.click", 3, b"", partition=1)])
    done.acknowledge([rec("events.view", 12, b"")])
    view, click = TopicPartition("events.view", 0), TopicPartition("events.click", 1)
    assert done.take({view}) == {view: 13}  # click was revoked: its new owner redoes it
    assert done.take({view, click}) == {}  # taken once
    done.acknowledge([rec("events.click", 7, b"", partition=1)])
    assert done.take({view, click}) == {click: 8}
