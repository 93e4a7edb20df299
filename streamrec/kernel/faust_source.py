"""The worker's input through Faust agents (``worker.consumer = faust``).

A Faust agent subscribed to the role's topics takes its events in lists (Faust's
``noack_take``: up to the batch size, or what came within ``linger_s``) and hands them to
a bounded queue; the work (the event path, or serving) takes them as batches, the same
:class:`FetchedBatch` the batch consumer (:mod:`streamrec.kernel.consumer`) gives, with
the lags, first offsets and assignment the event-time merge needs. Events are
acknowledged to Faust only once everything their batch produced was delivered, and only up
to the offsets the work says are safe (``batch.offsets``: below the first record the merge
still holds), so Faust commits nothing that is not done. Teams add their own agents and
tables to the same app.

Cost: Faust's stream layer adds a Message, an Event, a queue hop and an acknowledgement per
event, which is why the batch consumer stays the default (``docs/performance.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, cast

import faust
from aiokafka import ConsumerRecord
from faust.types import TP, EventT, StreamT

from streamrec.kernel.consumer import Batch, FetchedBatch, Record

log = logging.getLogger(__name__)

Partition = tuple[str, int]
QUEUE_BATCHES = 4  # lists of events an agent may hand over before it waits
RESEEK_AFTER_S = 2.0  # a rewound partition that brought nothing back by then is sought again


def _record(event: EventT[Any]) -> Record:
    """The event's message in the batch consumer's record type (timestamps in ms)."""
    m = event.message
    return ConsumerRecord(m.topic, m.partition, m.offset, int(m.timestamp * 1000),
                          m.timestamp_type, m.key, m.value, None, len(m.key or b""),
                          len(m.value or b""), m.headers or [])


class FaustSource:
    """Batches of the events a Faust agent receives on ``topics``."""

    def __init__(self, topics: Sequence[str], max_records: int, idle_interval_s: float,
                 linger_s: float) -> None:
        self.topics = list(topics)
        self._max_records = max_records
        self._idle_interval_s = idle_interval_s
        self._linger_s = linger_s
        self._queue: asyncio.Queue[list[EventT[Any]]] = asyncio.Queue(QUEUE_BATCHES)
        self._app: faust.App | None = None
        self.assignment = 0  # bumped at every rebalance: batches in hand no longer count
        self._owned: set[Partition] = set()
        self._starts: dict[Partition, int] = {}  # where reading began after the assignment
        self._taken: dict[Partition, int] = {}  # last offset handed to the work
        self._unacked: dict[Partition, deque[EventT[Any]]] = {}
        # after a rewind: (the offset reading restarts from, the last offset taken before);
        # events above the latter that come before the first one below it were fetched
        # before the seek and are dropped (they come again)
        self._rewound: dict[Partition, tuple[int, int]] = {}
        self._sought_at: dict[Partition, float] = {}  # monotonic time of a rewind's last seek
        self._stale: set[Partition] = set()  # rewound, and brought a record from before the seek
        self._seeks: dict[Partition, int] = {}
        self._held: set[Partition] = set()
        self._stopping = False

    def install(self, app: faust.App, name: str) -> None:
        """Register the agent on ``app`` and follow its rebalances."""
        self._app = app
        channel = app.topic(*self.topics, key_serializer="raw", value_serializer="raw")
        app.agent(channel, name=name)(self._agent)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

    async def _agent(self, stream: StreamT[Any]) -> None:
        """The agent: lists of events to the queue, unacknowledged (the work acknowledges)."""
        taking: Any = cast(Any, stream).noack_take(self._max_records, within=self._linger_s)
        async for events in taking:
            await self._queue.put(list(events))

    async def _on_revoked(self, app: faust.App, revoked: set[TP], **_: Any) -> None:
        self.assignment += 1

    async def _on_assigned(self, app: faust.App, assigned: set[TP], **_: Any) -> None:
        self.assignment += 1
        mine = {tp for tp in assigned if tp.topic in self.topics}
        self._owned = {(tp.topic, tp.partition) for tp in mine}
        self._starts.clear()
        committed = getattr(app.consumer, "_committed_offset", {})
        for tp in mine:
            # where reading resumes: the committed offset (Faust seeks there), else where
            # the fetcher stands (nothing committed yet: the reset position)
            start = committed.get(tp)
            if start is None:
                start = await app.consumer.position(tp)
            if start is not None:
                self._starts[(tp.topic, tp.partition)] = start
        # Faust reads every partition again from its committed offset; what was fetched
        # before the rebalance is recognised by its generation and dropped (_accept)
        self._taken.clear()
        self._rewound.clear()
        self._sought_at.clear()
        self._stale.clear()
        self._unacked.clear()
        self._seeks.clear()
        self._held.clear()
        log.info("partitions assigned (faust) app_id=%s count=%d", app.conf.id, len(mine))

    def request_stop(self) -> None:
        self._stopping = True

    async def batches(self) -> AsyncIterator[FetchedBatch]:
        """Up to ``max_records`` events as they come; an empty batch after each idle
        interval (the work checks the state's watermarks even when nothing comes)."""
        while not self._stopping:
            await self._apply_seeks()
            events: list[EventT[Any]] = []
            with contextlib.suppress(TimeoutError):
                events += await asyncio.wait_for(self._queue.get(), self._idle_interval_s)
            while events and len(events) < self._max_records and not self._queue.empty():
                events += self._queue.get_nowait()
            yield self._batch(events)

    def _batch(self, events: list[EventT[Any]]) -> FetchedBatch:
        batch = FetchedBatch([], self.assignment)
        generation = getattr(self._app, "consumer_generation_id", None)
        for event in events:
            m = event.message
            part = (m.topic, m.partition)
            fetched_in = getattr(m, "generation_id", None)
            if generation is not None and fetched_in is not None and fetched_in != generation:
                continue  # fetched before the last rebalance: Faust reads it again
            if not self._accept(part, m.offset):
                continue
            self._taken[part] = m.offset
            self._unacked.setdefault(part, deque()).append(event)
            batch.starts.setdefault(part, m.offset)
            batch.ends[part] = m.offset + 1
            batch.append(_record(event))
        batch.lags = self._lags()
        self._seek_again(time.monotonic())
        return batch

    def _seek_again(self, now: float) -> None:
        """Seek a rewound partition again when a record fetched before its seek came after
        it, or when nothing came back for a while.

        Faust's fetcher may be handing out a record fetched before the seek while the seek
        happens (its hand-over waits while the work is busy); it then sets its read offset
        past that record and drops every record below it, the ones asked for again
        included. A second seek, after that record came through, sets it back."""
        for part, (start, _) in self._rewound.items():
            if part in self._stale or now - self._sought_at.get(part, now) > RESEEK_AFTER_S:
                self._seeks[part] = start
        self._stale.clear()

    def _accept(self, part: Partition, offset: int) -> bool:
        """False for events of partitions not owned, already taken, or fetched before a
        rewind."""
        if part not in self._owned:
            return False
        rewound = self._rewound.get(part)
        if rewound is not None:
            start, stale_above = rewound
            if offset > stale_above:
                self._stale.add(part)
                return False
            if offset < start:
                return False
            del self._rewound[part]
            self._sought_at.pop(part, None)
            return True
        return offset > self._taken.get(part, -1)

    def _lags(self) -> dict[Partition, int | None]:
        """Per owned partition, the records in its log after those taken (None: unknown)."""
        lags: dict[Partition, int | None] = {}
        consumer = self._app.consumer if self._app is not None else None
        for part in self._owned:
            first = self._taken[part] + 1 if part in self._taken else self._starts.get(part)
            try:
                end = consumer.highwater(TP(*part)) if consumer is not None else None
            except Exception:  # not fetched yet
                end = None
            lags[part] = None if end is None or first is None else max(0, end - first)
        return lags

    async def lag(self) -> dict[TP, int]:
        """Records in the log after the last one taken, per owned partition."""
        return {TP(*part): lag for part, lag in self._lags().items() if lag is not None}

    def acknowledge(self, batch: Batch) -> None:
        """The batch is delivered: acknowledge its events to Faust, up to the offsets the
        work allows (``batch.offsets``), or all it took."""
        if not isinstance(batch, FetchedBatch) or batch.assignment != self.assignment:
            return
        limits = batch.offsets if batch.offsets is not None else batch.ends
        for part, limit in limits.items():
            pending = self._unacked.get(part)
            while pending and pending[0].message.offset < limit:
                pending.popleft().ack()

    def hold(self, partitions: Iterable[Partition], waiting: bool) -> None:
        """Fetch nothing more from these partitions until the next call.

        Through Faust's own back-pressure (``on_buffer_full`` / ``on_buffer_drop``), not
        ``pause_partitions``: Faust drops the records it already fetched of a partition
        that is paused while it hands them out, and they are never fetched again; a
        partition marked full still hands out what was fetched."""
        held = set(partitions)
        if self._app is None or held == self._held:
            return
        consumer = self._app.consumer
        for part in self._held - held:
            consumer.on_buffer_drop(TP(*part))
        for part in held - self._held:
            consumer.on_buffer_full(TP(*part))
        self._held = held

    def rewind(self, offsets: dict[Partition, int]) -> None:
        """Read these partitions again from these offsets (sought before the next batch)."""
        for part, offset in offsets.items():
            if part in self._owned:
                self._seeks[part] = offset
                taken = self._taken.get(part, offset - 1)
                if offset <= taken:  # what was taken after it comes again
                    self._rewound[part] = (offset, taken)
                self._taken[part] = offset - 1
                self._unacked.pop(part, None)  # acknowledged when they come again
        self.hold([], False)

    async def _apply_seeks(self) -> None:
        if not self._seeks or self._app is None:
            return
        seeks, self._seeks = self._seeks, {}
        consumer = self._app.consumer
        for part, offset in seeks.items():
            await consumer.seek(TP(*part), offset)
            self._sought_at[part] = time.monotonic()
            # a record from before the seek makes Faust's fetcher mark the offsets between
            # the seek and it as a gap, which it would commit past: those records are read
            # again, and the fetcher marks the real gaps again as it reads them
            gaps = getattr(consumer, "_gap", {}).get(TP(*part))
            if gaps:
                gaps.chop(offset, 2 ** 63)
