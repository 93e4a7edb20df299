"""The worker's input: batches of records fetched straight from its consumer group.

Faust's stream layer costs about 45 µs per event here (a Message and an Event object, a
queue hop and an acknowledgement per event), more than the event path's own work per
event. The worker's consumers therefore sit below it: one aiokafka consumer in the role's
group fetches whole batches (``getmany``), the path works on a batch as a whole, and a
batch's offsets are committed only once everything it produced was delivered
(:class:`DoneOffsets`). Faust still runs the worker: web views, timers, the producer.

Nothing is lost or counted twice across stops, crashes and rebalances: offsets are
committed after the work, so unfinished batches are delivered again, and the state step's
watermarks (Redis) skip what was already applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from streamrec.kernel import metrics
from streamrec.kernel.clients import aiokafka_options
from streamrec.kernel.settings import Settings

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Batch = Sequence[Record]

# Partition p of every input topic goes to the same worker (the topics have the same
# partition count), so a user's views, clicks and purchases are applied by one worker in
# event-time order. aiokafka's default, round robin, spreads them over workers.
ASSIGNORS = (RangePartitionAssignor,)
COMMIT_TIMEOUT_S = 5.0  # a commit never holds the loop or a stop longer (broker away)
MAX_POLL_INTERVAL_MS = 1_000_000  # a long Redis outage stalls a batch; stay in the group


class FetchedBatch(list[Record]):
    """A batch, the assignment it was fetched under (see :class:`DoneOffsets`), and what
    the consumer knew of its partitions when it was fetched."""

    def __init__(self, records: list[Record], assignment: int,
                 lags: dict[tuple[str, int], int | None] | None = None) -> None:
        super().__init__(records)
        self.assignment = assignment
        # every assigned partition: records in its log not handed out yet (None: unknown)
        self.lags: dict[tuple[str, int], int | None] = lags or {}
        # per partition of the batch, the offsets of its first record and after its last
        self.starts: dict[tuple[str, int], int] = {}
        self.ends: dict[tuple[str, int], int] = {}
        # set by the event path when it holds records back: the offsets to commit once
        # this batch is done, instead of those after its records
        self.offsets: dict[tuple[str, int], int] | None = None


class DoneOffsets:
    """Next offsets to commit, per partition, of the batches that are done. Batches are
    acknowledged in order, so a partition's offset only moves forward. A batch fetched
    under an earlier assignment is not counted: its partitions may have been worked on by
    another worker since, whose commits it must not move back."""

    def __init__(self) -> None:
        self._next: dict[TopicPartition, int] = {}
        self.assignment = 0  # bumped when partitions are revoked (each rebalance)

    def acknowledge(self, batch: Batch) -> None:
        if isinstance(batch, FetchedBatch) and batch.assignment != self.assignment:
            return
        if isinstance(batch, FetchedBatch) and batch.offsets is not None:
            self.restore({TopicPartition(topic, partition): offset
                          for (topic, partition), offset in batch.offsets.items()})
            return
        for record in batch:
            tp = TopicPartition(record.topic, record.partition)
            if record.offset + 1 > self._next.get(tp, -1):
                self._next[tp] = record.offset + 1

    def take(self, owned: set[TopicPartition]) -> dict[TopicPartition, int]:
        """The offsets to commit for the partitions still owned; the rest are forgotten
        (their new owner delivers those batches again, the watermarks skip them)."""
        done, self._next = self._next, {}
        return {tp: offset for tp, offset in done.items() if tp in owned}

    def restore(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets to commit with the next ones (a failed commit's, or a batch's own);
        each partition's only moves forward."""
        for tp, offset in offsets.items():
            if offset > self._next.get(tp, -1):
                self._next[tp] = offset


class Source(Protocol):
    """What a worker role consumes: :class:`BatchConsumer` (aiokafka below Faust, the
    default) or :class:`streamrec.kernel.faust_source.FaustSource` (a Faust agent)."""

    def batches(self) -> AsyncIterator[Batch]: ...
    def acknowledge(self, batch: Batch) -> None: ...
    def hold(self, partitions: Iterable[tuple[str, int]], waiting: bool) -> None: ...
    def rewind(self, offsets: dict[tuple[str, int], int]) -> None: ...
    def request_stop(self) -> None: ...
    async def lag(self) -> Mapping[Any, int]: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: BatchConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer.commit()  # done work is not redone by the next owner
        self._consumer.done.assignment += 1  # batches still in hand no longer count

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned group=%s count=%d", self._consumer.group_id,
                 len(assigned))
        self._consumer.forget_reads(assigned)
        if self._consumer.on_assigned is not None:
            self._consumer.on_assigned()


class BatchConsumer:
    """One consumer in a group over ``topics``: batches of up to ``max_records``, offsets
    committed every ``commit_interval_s`` (and before a rebalance or a stop)."""

    def __init__(self, settings: Settings, group_id: str, topics: Sequence[str],
                 max_records: int, on_assigned: Callable[[], None] | None = None) -> None:
        w = settings.worker
        self.group_id = group_id
        self.on_assigned = on_assigned
        self.done = DoneOffsets()
        self._max_records = max_records
        self._commit_interval_s = w.commit_interval_s
        self._topics = list(topics)
        self._read: dict[TopicPartition, int] = {}  # last offset handed out per partition
        self._options: dict[str, Any] = dict(
            group_id=group_id, enable_auto_commit=False, auto_offset_reset=w.offset_reset,
            fetch_max_wait_ms=w.fetch_max_wait_ms, max_poll_records=max_records,
            session_timeout_ms=int(w.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, w.session_timeout_s / 3) * 1000),
            rebalance_timeout_ms=int(w.rebalance_timeout_s * 1000),
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
            partition_assignment_strategy=ASSIGNORS,
            **aiokafka_options(settings.kafka))
        self._client: AIOKafkaConsumer | None = None
        self._stopping = False
        self._held: set[TopicPartition] = set()
        self._waiting = False

    def acknowledge(self, batch: Batch) -> None:
        """Everything the batch produced was delivered: its offsets may be committed."""
        self.done.acknowledge(batch)

    def request_stop(self) -> None:
        """No further batch: :meth:`batches` ends within one poll (200 ms), even when the
        cancellation of the consuming task is lost in a fetch."""
        self._stopping = True

    @property
    def _consumer(self) -> AIOKafkaConsumer:
        if self._client is None:
            raise RuntimeError(f"consumer of group {self.group_id} used before start()")
        return self._client

    async def start(self) -> None:
        self._client = AIOKafkaConsumer(**self._options)  # needs the running loop
        await self._consumer.start()
        self._consumer.subscribe(self._topics, listener=_Listener(self))

    async def stop(self) -> None:
        try:
            await self.commit()
        finally:
            await self._consumer.stop()

    async def batches(self) -> AsyncIterator[Batch]:
        """Fetched records as they come, up to ``max_records`` per batch, in offset order
        per partition.

        Behind (a full batch): the next fetches go on while the batch is worked on. Caught
        up: fetching pauses until the next batch is asked for, which then holds everything
        that arrived meanwhile. Otherwise each fetch would return the one or two events
        that arrived since the last one, and every tiny batch would pay a fetch, a state
        step and a round of scoring (and the broker a fetch) for a few events."""
        loop = asyncio.get_running_loop()
        next_commit = next_check = loop.time() + self._commit_interval_s
        while not self._stopping:
            resume = set(self._consumer.paused()) - self._held
            if resume:
                self._consumer.resume(*resume)
            asked = time.perf_counter()
            fetched = await self._consumer.getmany(timeout_ms=200, max_records=self._max_records)
            if loop.time() >= next_commit:
                await self.commit()
                next_commit = loop.time() + self._commit_interval_s
            idle_check = loop.time() >= next_check  # an empty batch now and then: the
            # event path checks the state's watermarks even when nothing comes
            if self._stopping or not (fetched or self._waiting or idle_check):
                continue
            next_check = loop.time() + self._commit_interval_s
            # stage ``fetch``: from asking for the next batch to having it (the broker's
            # fetch, and any work of the previous batch that ran meanwhile)
            if fetched:
                metrics.STAGE_SECONDS.labels(stage="fetch").observe(
                    time.perf_counter() - asked)
            batch = FetchedBatch([], self.done.assignment)
            for tp, records in fetched.items():
                batch.extend(records)
                self._read[tp] = records[-1].offset
            batch.lags = await self._lags()
            batch.starts = {(tp.topic, tp.partition): records[0].offset
                            for tp, records in fetched.items()}
            batch.ends = {(tp.topic, tp.partition): records[-1].offset + 1
                          for tp, records in fetched.items()}
            if len(batch) < self._max_records:
                self._consumer.pause(*self._consumer.assignment())
            yield batch
            if self._held:
                self._consumer.pause(*(tp for tp in self._held
                                       if tp in self._consumer.assignment()))

    def hold(self, partitions: Iterable[tuple[str, int]], waiting: bool) -> None:
        """Fetch nothing more from these partitions until the next call (the event path
        holds enough of their records already); ``waiting``: the event path holds records
        back for a while, so hand it a batch (empty, if need be) after every poll."""
        self._held = {TopicPartition(t, p) for t, p in partitions}
        self._waiting = waiting

    def rewind(self, offsets: dict[tuple[str, int], int]) -> None:
        """Read these partitions again from these offsets (the state lost what was applied
        after them); nothing is held back any more."""
        owned = self._consumer.assignment()
        for (topic, partition), offset in offsets.items():
            tp = TopicPartition(topic, partition)
            if tp in owned:
                self._consumer.seek(tp, offset)
                self._read[tp] = offset - 1
        self._held = set()
        self._waiting = False

    async def _lags(self) -> dict[tuple[str, int], int | None]:
        """Per assigned partition, the records in its log after those handed out, as of
        the latest fetch response (None before the first)."""
        lags: dict[tuple[str, int], int | None] = {}
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            lags[(tp.topic, tp.partition)] = None if end is None else \
                max(0, end - await self._consumer.position(tp))
        return lags

    async def commit(self) -> None:
        if self._client is None:
            return
        offsets = self.done.take(self._consumer.assignment())
        if not offsets:
            return
        try:
            await asyncio.wait_for(self._consumer.commit(offsets), COMMIT_TIMEOUT_S)
        except (KafkaError, TimeoutError) as exc:  # rebalancing or broker away
            self.done.restore(offsets)
            log.warning("offset commit failed group=%s error=%s", self.group_id,
                        type(exc).__name__)

    def forget_reads(self, assigned: set[TopicPartition]) -> None:
        self._read = {tp: offset for tp, offset in self._read.items() if tp in assigned}

    async def lag(self) -> dict[TopicPartition, int]:
        """Records in the log after the last one handed out, per assigned partition."""
        if self._client is None:
            return {}
        tps = set(self._consumer.assignment())
        if not tps:
            return {}
        ends = await asyncio.wait_for(self._consumer.end_offsets(list(tps)), COMMIT_TIMEOUT_S)
        lags = {}
        for tp, end in ends.items():
            read = self._read[tp] + 1 if tp in self._read else \
                await self._consumer.position(tp)  # nothing read yet: where reading starts
            lags[tp] = max(0, end - read)
        return lags
