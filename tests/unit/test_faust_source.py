"""The Faust agent's batches: what is taken, acknowledged and dropped (no broker: the
Faust events and consumer here are stand-ins holding offsets; the whole path under Faust
runs against a real broker in tests/integration/test_duplicates.py and the chaos tests)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP
from intervaltree import IntervalTree

from streamrec.kernel import faust_source
from streamrec.kernel.faust_source import FaustSource

TOPIC = "events.view"


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    timestamp: float = 1.0
    timestamp_type: int = 0
    key: bytes = b"u"
    value: bytes = b"{}"
    headers: list[Any] = field(default_factory=list)
    generation_id: int = 1


@dataclass
class Event:
    message: Message
    acked: bool = False

    def ack(self) -> bool:
        self.acked = True
        return True


class Consumer:
    def __init__(self, positions: dict[TP, int], highwaters: dict[TP, int]) -> None:
        self.positions, self.highwaters = positions, highwaters
        self.sought: list[tuple[TP, int]] = []
        self.full: set[TP] = set()
        self._gap: dict[TP, IntervalTree] = {}  # Faust's offsets it may commit past

    def on_buffer_full(self, tp: TP) -> None:
        self.full.add(tp)

    def on_buffer_drop(self, tp: TP) -> None:
        self.full.discard(tp)

    async def position(self, tp: TP) -> int:
        return self.positions[tp]

    def highwater(self, tp: TP) -> int:
        return self.highwaters[tp]

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))


@dataclass
class App:
    consumer: Consumer
    conf: Any = None
    consumer_generation_id: int = 1


def _source(highwater: int = 100) -> tuple[FaustSource, Consumer]:
    source = FaustSource([TOPIC], max_records=100, idle_interval_s=0.01, linger_s=0.01)
    tps = {TP(TOPIC, 0), TP(TOPIC, 1)}
    consumer = Consumer({tp: 10 for tp in tps}, {tp: highwater for tp in tps})
    app: Any = App(consumer, conf=type("Conf", (), {"id": "t"})())
    source._app = app
    asyncio.run(source._on_assigned(app, tps))
    return source, consumer


def _events(partition: int, offsets: range) -> list[Any]:
    return [Event(Message(TOPIC, partition, o)) for o in offsets]


def test_a_batch_acknowledges_only_below_the_offsets_the_work_allows() -> None:
    source, _ = _source()
    events = _events(0, range(10, 20))
    batch = source._batch(events)
    assert [r.offset for r in batch] == list(range(10, 20))
    batch.offsets = {(TOPIC, 0): 15}  # the merge holds 15.. back
    source.acknowledge(batch)
    assert [e.acked for e in events] == [True] * 5 + [False] * 5
    later = source._batch([])
    later.offsets = {(TOPIC, 0): 20}
    source.acknowledge(later)
    assert all(e.acked for e in events)


def test_a_batch_of_an_earlier_assignment_acknowledges_nothing() -> None:
    source, _ = _source()
    events = _events(0, range(10, 13))
    batch = source._batch(events)
    asyncio.run(source._on_revoked(source._app, set()))
    source.acknowledge(batch)
    assert not any(e.acked for e in events)


def test_lags_count_from_the_position_then_from_what_was_taken() -> None:
    source, _ = _source(highwater=50)
    assert source._lags() == {(TOPIC, 0): 40, (TOPIC, 1): 40}
    batch = source._batch(_events(1, range(10, 30)))
    assert batch.lags == {(TOPIC, 0): 40, (TOPIC, 1): 20}
    assert batch.starts == {(TOPIC, 1): 10} and batch.ends == {(TOPIC, 1): 30}


def test_after_a_rewind_events_fetched_before_the_seek_are_dropped() -> None:
    source, consumer = _source()
    source._batch(_events(0, range(10, 30)))  # taken up to 29
    source.rewind({(TOPIC, 0): 20})  # the state lost 20..29
    stale = _events(0, range(30, 35))  # fetched before the seek, still queued
    again = _events(0, range(20, 32))  # read again after it
    batch = source._batch(stale + again)
    assert [r.offset for r in batch] == list(range(20, 32))
    asyncio.run(source._apply_seeks())
    assert consumer.sought == [(TP(TOPIC, 0), 20)]


def test_a_rewind_whose_records_faust_then_dropped_is_sought_again() -> None:
    """A record fetched before the seek that Faust hands out after it moves Faust's read
    offset past the records asked for again (it drops them) and marks them as a gap it may
    commit past: the source seeks again once that record came, and clears the gap."""
    source, consumer = _source()
    tp = TP(TOPIC, 0)
    source._batch(_events(0, range(10, 30)))
    source.rewind({(TOPIC, 0): 20})
    asyncio.run(source._apply_seeks())
    consumer._gap[tp] = IntervalTree.from_tuples([(21, 35)])  # as Faust's fetcher marks it
    assert list(source._batch(_events(0, range(30, 35)))) == []
    asyncio.run(source._apply_seeks())
    assert consumer.sought == [(tp, 20), (tp, 20)]
    assert not consumer._gap[tp]
    batch = source._batch(_events(0, range(20, 32)))
    assert [r.offset for r in batch] == list(range(20, 32))
    asyncio.run(source._apply_seeks())
    assert len(consumer.sought) == 2, "nothing more to seek once the records came back"


def test_a_rewind_that_brings_nothing_back_is_sought_again_after_a_while() -> None:
    source, consumer = _source()
    source._batch(_events(1, range(10, 30)))
    source.rewind({(TOPIC, 1): 12})
    asyncio.run(source._apply_seeks())
    source._batch([])
    asyncio.run(source._apply_seeks())
    assert len(consumer.sought) == 1, "not before RESEEK_AFTER_S"
    source._sought_at[(TOPIC, 1)] -= faust_source.RESEEK_AFTER_S + 0.1
    source._batch([])
    asyncio.run(source._apply_seeks())
    assert consumer.sought == [(TP(TOPIC, 1), 12)] * 2


def test_events_of_partitions_not_owned_or_already_taken_are_dropped() -> None:
    source, _ = _source()
    source._batch(_events(0, range(10, 15)))
    batch = source._batch([*_events(0, range(12, 17)), Event(Message("other", 0, 1))])
    assert [r.offset for r in batch] == [15, 16]


def test_holding_a_partition_marks_it_full_not_paused() -> None:
    """Faust drops the already fetched records of a paused partition (never fetched
    again); a partition marked full still hands them out."""
    source, consumer = _source()
    source.hold([(TOPIC, 1)], True)
    assert consumer.full == {TP(TOPIC, 1)}
    source.hold([(TOPIC, 0)], True)
    assert consumer.full == {TP(TOPIC, 0)}
    source.hold([], False)
    assert consumer.full == set()


def test_after_a_rebalance_what_was_fetched_before_it_is_dropped() -> None:
    """Faust reads every partition again from its committed offset after a rebalance;
    events fetched in the earlier generation, still on their way, are dropped."""
    source, _consumer = _source()
    source._batch(_events(0, range(10, 40)))  # taken up to 39, committed 10
    asyncio.run(source._on_revoked(source._app, set()))
    source._app.consumer_generation_id = 2
    asyncio.run(source._on_assigned(source._app, {TP(TOPIC, 0)}))
    in_flight = _events(0, range(40, 45))  # fetched in generation 1
    again = _events(0, range(10, 42))
    for event in again:
        event.message.generation_id = 2
    batch = source._batch([*in_flight, *again])
    assert [r.offset for r in batch] == list(range(10, 42))
    assert source._lags() == {(TOPIC, 0): 100 - 42}


def test_reading_starts_where_faust_resumes_the_committed_offset() -> None:
    """The lag of a partition nothing was taken from counts from the committed offset,
    not from where the fetcher already stands."""
    source, consumer = _source(highwater=50)
    consumer._committed_offset = {TP(TOPIC, 0): 4}
    asyncio.run(source._on_assigned(source._app, {TP(TOPIC, 0), TP(TOPIC, 1)}))
    assert source._lags() == {(TOPIC, 0): 46, (TOPIC, 1): 40}
    batch = source._batch(_events(0, range(4, 9)))  # from the committed offset on
    assert [r.offset for r in batch] == [4, 5, 6, 7, 8]


def test_the_installed_faust_consumer_keeps_the_gaps_the_source_clears() -> None:
    """The source clears the gaps Faust's fetcher marks after a seek through the consumer's
    private ``_gap`` (interval trees per partition, as the fake above). A Faust release
    without it would bring the skipped records back silently: this fails first."""
    import faust

    app = faust.App("gap-probe", broker="kafka://127.0.0.1:1", store="memory://")
    gaps = app.consumer._gap
    tree = gaps[TP("t", 0)]  # a default dict of interval trees
    tree.add(IntervalTree.from_tuples([(1, 5)]).pop())
    tree.chop(1, 2 ** 63)
    assert not tree
