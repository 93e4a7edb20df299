"""The event path: validate, apply the batch to the state, announce.

One Kafka hop per event: each batch from the input topics (:mod:`streamrec.kernel.consumer`) is
decoded and validated (bad messages to the DLQ), merged by event time with what is held of
the other input topics' same partition (:mod:`streams.merge`), applied to the state in one
atomic step
whose watermarks are the input partitions, and then announced for every user it touched:
serving inline (role ``all``) or a user update for the serving workers (role ``stream``).
Everything a batch produces is delivered before the batch is acknowledged (in the
background, while the next batch is worked on).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from serving.publisher import Announce, Prepared
from streamrec.contracts.dlq import Source, dlq_record
from streamrec.contracts.event import decode_event
from streamrec.contracts.user_update import UserUpdate
from streamrec.kernel import metrics
from streamrec.kernel.consumer import Batch, FetchedBatch, Record
from streamrec.kernel.errors import InvalidEvent
from streamrec.kernel.outbox import InOrderDelivery, Outbox, Records
from streamrec.kernel.retry import redis_call
from streamrec.state.reader import Snapshot
from streamrec.state.store import Positioned, Progress, StateRegressed, StateStore
from streams.merge import EventTimeMerge, Partition, order_key
from streams.user_vectors import UserVectorWriter

log = logging.getLogger(__name__)


# sends serving's read of these users' state; the future parses the reply
ReadAhead = Callable[[list[str]], Awaitable[asyncio.Future[Snapshot]]]
# partitions whose fetching pauses (enough held), and whether anything is held back
Hold = Callable[[list[Partition], bool], None]
# read these partitions again from these offsets
Rewind = Callable[[dict[Partition, int]], None]


@dataclass(frozen=True)
class EventPath:
    type_by_topic: dict[str, str]  # input topic -> the event type it carries
    store: StateStore
    outbox: Outbox
    dlq_topic: str
    announce: Announce  # serve the users inline, or publish their updates
    vectors: UserVectorWriter | None = None
    # role all: the announcement (inline serving) stores the batch's vectors with its
    # lists, in one write; otherwise the state step stores them before announcing
    announce_stores_vectors: bool = False
    # role all: sends serving's read of the users' state as soon as the batch is applied,
    # so that Redis runs it while the users are encoded; the future parses the reply
    read_ahead: ReadAhead | None = None
    # the event-time merge of the input partitions (streams.merge): how long a caught-up
    # partition with nothing buffered holds its group back, and how many records held per
    # partition stop its fetching
    idle_ms: float = 0.0
    hold_limit: int = 20_000
    # privacy.pseudonym_key: user id -> pseudonym, applied before anything is stored or sent
    pseudonymize: Callable[[str], str] | None = None


def _source(record: Record) -> Source:
    return Source(topic=record.topic, partition=record.partition, offset=record.offset)


async def validate(batch: Batch, path: EventPath, out: Records) -> list[Positioned]:
    """The valid events of a batch with their input coordinates; the others to the DLQ."""
    valid: list[Positioned] = []
    accepted: Counter[str] = Counter()
    for record in batch:
        topic_type = path.type_by_topic.get(record.topic)
        raw: Any = record.value
        try:
            if raw is not None and not isinstance(raw, bytes):
                raw = bytes(raw)
            event = decode_event(raw, topic_type, broker_ts=_broker_ms(record))
        except InvalidEvent as err:
            await _dead_letter(path, err, raw, record, topic_type, out)
            continue
        except Exception as exc:  # a bug must not kill the worker or lose the message
            log.exception("validation failed topic=%s offset=%s", record.topic, record.offset)
            internal = InvalidEvent("internal_error", "", f"{type(exc).__name__}: {exc}")
            await _dead_letter(path, internal, raw, record, topic_type, out)
            continue
        if path.pseudonymize is not None:
            event = dataclasses.replace(event, user_id=path.pseudonymize(event.user_id))
        valid.append(Positioned(record.topic, record.partition, record.offset, event))
        accepted[event.type] += 1
    for kind, n in accepted.items():
        metrics.EVENTS.labels(type=kind, outcome="accepted").inc(n)
    return valid


def _broker_ms(record: Record) -> int | None:
    """The record's timestamp (ms); None when it has none (-1)."""
    return record.timestamp if record.timestamp is not None and record.timestamp > 0 else None


async def _dead_letter(path: EventPath, err: InvalidEvent, raw: bytes | None, record: Record,
                       topic_type: str | None, out: Records) -> None:
    await out.send(path.dlq_topic, None, dlq_record(err, raw, _source(record)))
    metrics.DLQ.labels(reason=err.reason).inc()
    metrics.EVENTS.labels(type=topic_type or "unknown", outcome="invalid").inc()


@dataclass(frozen=True)
class Release:
    """What a batch lets through: the events to apply now, and the input partitions whose
    progress the state step records (and checks)."""

    events: list[Positioned]
    progress: dict[Partition, Progress]


class Synchroniser:
    """The event-time merge of the batches' input partitions (:mod:`streams.merge`), the
    offsets that are safe to commit while it holds records back, and what this worker
    knows was applied of each partition (the state's watermarks must not be below it)."""

    def __init__(self, path: EventPath, hold: Hold | None, rewind: Rewind | None) -> None:
        self._merge = EventTimeMerge(idle_ms=path.idle_ms)
        self._hold_limit = path.hold_limit
        self._hold = hold
        self._rewind = rewind
        self._assignment: int | None = None
        self._ends: dict[Partition, int] = {}
        self._applied: dict[Partition, int] = {}  # offsets up to these are in the state

    def release(self, batch: Batch, valid: list[Positioned]) -> Release:
        """The events to apply now, in event-time order; sets the batch's offsets."""
        if not isinstance(batch, FetchedBatch):  # no partition information: apply as is
            return Release(sorted(valid, key=order_key), {})
        merge = self._merge
        if batch.assignment != self._assignment:  # revoked: the new owner reads them again
            self._forget()
            self._assignment = batch.assignment
        for part, first in batch.starts.items():
            self._applied.setdefault(part, first - 1)  # the committed offsets are applied
        merge.add(valid)
        events = merge.release(batch.lags, time.monotonic() * 1000)
        self._ends.update(batch.ends)
        limits = merge.commit_limits()
        batch.offsets = {part: limits.get(part, end) for part, end in self._ends.items()}
        if self._hold is not None:
            self._hold([part for part in limits if merge.held(part) >= self._hold_limit],
                       bool(limits))
        # every partition this worker applied is checked, so a state that lost writes is
        # found even for partitions that have nothing new (idle batches come every second)
        progress = {part: Progress(applied, max(applied, batch.offsets.get(part, 0) - 1))
                    for part, applied in self._applied.items()}
        return Release(events, progress)

    def applied(self, release: Release) -> None:
        for part, known in release.progress.items():
            self._applied[part] = known.reached

    def rewind(self, lost: StateRegressed) -> None:
        """Read again what was not applied: the partitions the state lost from its
        watermarks, every other one from after what this worker applied of it (the records
        held and those of the dropped batch)."""
        offsets = {part: applied + 1 for part, applied in self._applied.items()}
        for part, wm in lost.watermarks.items():
            offsets[part] = min(offsets.get(part, wm + 1), wm + 1)
        self._forget()
        if self._rewind is not None:
            self._rewind(offsets)

    def _forget(self) -> None:
        self._merge.clear()
        self._ends.clear()
        self._applied.clear()


async def process_events(batches: AsyncIterator[Batch], path: EventPath,
                         acknowledge: Callable[[Batch], None],
                         hold: Hold | None = None, rewind: Rewind | None = None) -> None:
    """Validate, merge by event time, apply atomically, announce every user of the batch,
    deliver, acknowledge.

    Two stages overlap:
    while batch k is announced (lists computed and published), batch k + 1 is validated
    and applied, so Python and Redis work at the same time. Announcements run in batch
    order, one at a time; each batch is acknowledged once its records are delivered.
    A state found behind what was applied (Redis lost writes) drops the batch and reads
    its partitions again from the state's watermarks (``rewind``).
    """
    delivery = InOrderDelivery()
    announcing: asyncio.Future[None] | None = None
    synchroniser = Synchroniser(path, hold, rewind)
    try:
        async for batch in batches:
            out = path.outbox.records()
            _observe_queue(batch)
            start = time.perf_counter()
            release = synchroniser.release(batch, await validate(batch, path, out))
            metrics.STAGE_SECONDS.labels(stage="ingest").observe(time.perf_counter() - start)
            try:
                if release.events:
                    updates, prepared = await _apply(release, path)
                else:  # the watermarks alone: moved past dead letters, and checked
                    updates, prepared = [], Prepared()
                    if release.progress:
                        await redis_call("apply_batch",
                                         partial(path.store.apply, [], release.progress))
            except StateRegressed as lost:
                log.warning("state behind what was applied (redis lost writes?); reading "
                            "again from its watermarks partitions=%s", lost.watermarks)
                metrics.STATE_REWINDS.inc()
                synchroniser.rewind(lost)
                continue
            synchroniser.applied(release)
            if announcing is not None:
                await announcing
            announcing = asyncio.ensure_future(
                _announce(path, updates, prepared, out, delivery, partial(acknowledge, batch)))
        if announcing is not None:
            await announcing
        await delivery.drain()
    finally:
        if announcing is not None and not announcing.done():
            announcing.cancel()


def _observe_queue(batch: Batch) -> None:
    """Stage ``queue``: from the newest event's broker timestamp to the batch's start (the
    broker, the fetch and the batching)."""
    newest_ms = max((record.timestamp or 0 for record in batch), default=0)
    if newest_ms:
        metrics.STAGE_SECONDS.labels(stage="queue").observe(
            max(0.0, time.time() - newest_ms / 1000))


async def _announce(path: EventPath, updates: list[UserUpdate], prepared: Prepared,
                    out: Records, delivery: InOrderDelivery,
                    acknowledge: Callable[[], None]) -> None:
    if updates:
        await path.announce(updates, out, prepared)
    await delivery.hand_over(out, acknowledge)


async def _apply(release: Release, path: EventPath) -> tuple[list[UserUpdate], Prepared]:
    """The state step; returns one update per user of the batch, redelivered ones included
    (a crash between the state step and the announcement must not leave a user without a
    list for the new state), and what it prepared for the announcement."""
    start = time.perf_counter()
    positioned = release.events
    result = await redis_call("apply_batch",
                              partial(path.store.apply, positioned, release.progress))
    metrics.STATE_BATCH_SECONDS.observe(time.perf_counter() - start)
    metrics.STATE_BATCH_EVENTS.observe(len(positioned))
    _count(result.applied, result.duplicates + result.below_watermark, result.late)
    if result.erased:
        metrics.ERASED_EVENTS.inc(result.erased)
    if result.corrupted:
        metrics.CORRUPTED_USERS.inc(result.corrupted)
        log.error("corrupted user state found and started anew users=%d", result.corrupted)
    latest: dict[str, UserUpdate] = {}
    for p in positioned:
        e = p.event
        if e.user_id not in result.sequences:  # forgotten, and these events from before
            continue
        latest[e.user_id] = UserUpdate(user_id=e.user_id, event_id=e.event_id, ts=e.ts,
                                     received=e.received)
    snapshot = await _read_ahead(path, list(latest))
    fresh = path.vectors.compute(result.sequences) if path.vectors is not None else None
    if fresh is not None and path.vectors is not None and not path.announce_stores_vectors:
        await redis_call("user_vectors", partial(path.vectors.store, fresh))
    if result.online_evaluations:
        metrics.ONLINE_EVALUATIONS.inc(result.online_evaluations)
        metrics.ONLINE_HITS.inc(result.online_hits)
    metrics.STAGE_SECONDS.labels(stage="state").observe(time.perf_counter() - start)
    return list(latest.values()), Prepared(fresh, snapshot)


async def _read_ahead(path: EventPath, user_ids: list[str]) -> asyncio.Future[Snapshot] | None:
    """Serving's read of these users, sent; None when there is none or it could not be
    sent (serving then reads by itself, with retries)."""
    if path.read_ahead is None:
        return None
    try:
        return await path.read_ahead(user_ids)
    except Exception as exc:  # Redis away: serving's own read retries
        log.debug("state read ahead not sent error=%s", type(exc).__name__)
        return None


def _count(applied: int, skipped: int, late: int) -> None:
    metrics.EVENTS.labels(type="all", outcome="applied").inc(applied)
    if skipped:
        metrics.EVENTS.labels(type="all", outcome="duplicate").inc(skipped)
        metrics.DUPLICATES.inc(skipped)
    if late:
        metrics.LATE.inc(late)


def publish_updates(topic: str) -> Announce:
    """Role ``stream``: tell the serving workers which users changed."""
    async def announce(updates: Sequence[UserUpdate], out: Records,
                       prepared: Prepared) -> None:  # vectors: stored by the state step
        for update in updates:
            await out.send(topic, update.user_id.encode(), update.to_json())
    return announce
