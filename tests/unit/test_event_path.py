"""The event-path agent body: fuzzed, it never raises and every message ends up in exactly
one place: the state step (valid) or the DLQ with a reason (invalid); a batch is
acknowledged only after everything it produced was delivered.

Faust's events, the producer and the state store are replaced by small recording doubles
here: this is a unit test of the agent's logic; integration tests drive the same code
through a real broker and Redis.
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

from streamrec.acks import backlog_after, held_batches
from streamrec.outbox import Outbox
from streams.agents import EventPath, process_events, publish_updates
from streams.state import ApplyResult, Positioned

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

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


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

    async def apply(self, batch: Any) -> ApplyResult:
        self.batches.append(list(batch))
        return ApplyResult(len(batch), 0, 0, 0)


def _path(store: Any, producer: Recorder) -> EventPath:
    async def started() -> Recorder:
        return producer
    outbox = Outbox(started)  # type: ignore[arg-type]
    return EventPath(TOPICS, store, outbox, "events.dlq",
                     publish_updates("streamrec.user-updates"))


async def _one_batch(batch: Sequence[Ev]) -> AsyncIterator[Sequence[Ev]]:
    async def take() -> AsyncIterator[Sequence[Ev]]:
        yield batch
    async for held in held_batches(take(), 2000, 0.02, lambda _: 0, 200):  # type: ignore[arg-type]
        yield held


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
    producer, store = Recorder(), RecordingStore()
    asyncio.run(process_events(_one_batch(batch), _path(store, producer)))  # never raises

    applied = [p for b in store.batches for p in b]
    dlq = producer.of("events.dlq")
    assert len(applied) + len(dlq) == len(messages)
    for _, _, value in dlq:
        record = orjson.loads(value)
        assert record["reason"] and record["detail"]
        assert record["source"]["topic"] in TOPICS
        original = messages[record["source"]["offset"]][1]
        assert base64.b64decode(record["raw"]) == (original or b"")
    for p in applied:
        assert p.topic in TOPICS and messages[p.offset][0] == p.topic
        assert p.event.type in ("view", "click", "purchase")
    # one update per distinct user of the batch, keyed by user
    updates = producer.of("streamrec.user-updates")
    assert sorted(k for _, k, _ in updates) == sorted({p.event.user_id.encode() for p in applied})
    assert producer.delivered == len(producer.sent)
    # every message was held during the batch and released after it
    assert all(ev.message.refs == 1 and ev.acks == 1 for ev in batch)


def test_a_batch_cut_short_stays_unacknowledged() -> None:
    """Worker stopping while Redis is down: the state batch is cancelled mid-apply; its
    messages keep their extra reference, so Faust never commits their offsets."""

    class StuckStore:
        async def apply(self, batch: Any) -> Any:
            await asyncio.sleep(3600)

    batch = [Ev(Msg("events.view", 0, n, 1.0),
                orjson.dumps({"user_id": "u", "item_id": "i", "ts": n})) for n in range(3)]

    async def run() -> None:
        task = asyncio.create_task(process_events(_one_batch(batch),
                                                  _path(StuckStore(), Recorder())))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert all(ev.message.refs == 1 and ev.acks == 0 for ev in batch)


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

    batch = [Ev(Msg("events.view", 0, 0, 1.0), b"not json"),
             Ev(Msg("events.view", 0, 1, 1.0),
                orjson.dumps({"user_id": "u", "item_id": "i", "ts": 5}))]

    async def run() -> tuple[list[int], list[int]]:
        task = asyncio.create_task(process_events(_one_batch(batch),
                                                  _path(RecordingStore(), SlowBroker())))
        await asyncio.sleep(0.05)
        before = [ev.acks for ev in batch]
        for future in gate:
            future.set_result(None)
        await task
        return before, [ev.acks for ev in batch]

    before, after = asyncio.run(run())
    assert len(gate) == 2  # one DLQ record, one user update
    assert before == [0, 0]
    assert after == [1, 1]


def test_takes_are_joined_into_one_batch_only_while_a_backlog_is_waiting() -> None:
    """Takes followed by a backlog join the next take, up to the size and time limits;
    without a backlog a take is its own batch, so a quiet stream is not delayed."""
    waiting = [500, 500, 0, 500, 500, 500, 500, 0]  # events in the log after each take
    takes = [[Ev(Msg("events.view", 0, 100 * t + n, 1.0), b"") for n in range(100)]
             for t in range(len(waiting))]
    backlog_of = {id(take[0]): w for take, w in zip(takes, waiting, strict=True)}
    now = [0.0]

    async def source() -> AsyncIterator[Sequence[Ev]]:
        for take in takes:
            now[0] += 0.004  # each take fills for 4 ms
            yield take

    async def run(max_events: int) -> list[int]:
        now[0] = 0.0
        return [len(b) async for b in held_batches(
            source(), max_events, 0.011, lambda take: backlog_of[id(take[0])],  # type: ignore[arg-type]
            200, lambda: now[0])]

    # 3 takes (no backlog after the third); 4 takes (12 ms >= 11 ms); 1 take
    assert asyncio.run(run(1000)) == [300, 400, 100]
    assert all(ev.message.refs == 1 for take in takes for ev in take)
    assert asyncio.run(run(150)) == [200, 100, 200, 200, 100]  # the size limit


def test_backlog_is_what_the_log_holds_after_the_take() -> None:
    take = [Ev(Msg("events.view", 0, 10, 1.0), b""), Ev(Msg("events.view", 0, 11, 1.0), b""),
            Ev(Msg("events.click", 1, 7, 1.0), b"")]
    ends = {("events.view", 0): 50, ("events.click", 1): 8}
    backlog = backlog_after(ends.get)
    assert backlog(take) == (50 - 12) + 0  # type: ignore[arg-type]


def test_a_backlog_that_ends_is_not_held_back() -> None:
    """A take with a backlog and then nothing more: the batch goes out after the
    coalescing time."""
    take = [Ev(Msg("events.view", 0, n, 1.0), b"") for n in range(100)]

    async def source() -> AsyncIterator[Sequence[Ev]]:
        yield take
        await asyncio.Event().wait()  # no more events
        yield take  # never reached

    async def run() -> tuple[int, float]:
        start = asyncio.get_running_loop().time()
        batches = held_batches(source(), 2000, 0.05, lambda _: 1000, 200)  # type: ignore[arg-type]
        first = await anext(batches)
        elapsed = asyncio.get_running_loop().time() - start
        await batches.aclose()
        return len(first), elapsed

    size, elapsed = asyncio.run(run())
    assert size == 100
    assert 0.04 < elapsed < 1.0
