"""Agent bodies of the event path: ingest (validate, route) and state (apply, announce)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any

from faust.types import EventT, TopicT

from streamrec import metrics
from streamrec.acks import hold, release
from streamrec.errors import InvalidEvent
from streamrec.retry import redis_call
from streams.dlq import Source, dlq_record
from streams.events import decode_event, load_normalised
from streams.state import Positioned, StateStore
from streams.user_updates import UserUpdate
from streams.user_vectors import UserVectorWriter

log = logging.getLogger(__name__)


def _source(event: EventT[Any]) -> Source:
    msg = event.message
    return Source(topic=msg.topic, partition=msg.partition, offset=msg.offset)


async def ingest(batches: AsyncIterator[Sequence[EventT[Any]]], type_by_topic: dict[str, str],
                 events_topic: TopicT, dlq_topic: TopicT) -> None:
    """Decode and validate input events; valid ones go keyed by user, bad ones to the DLQ."""
    async for batch in batches:
        hold(batch)
        start = time.perf_counter()
        for ev in batch:
            msg = ev.message
            topic_type = type_by_topic.get(msg.topic)
            raw: Any = ev.value
            try:
                if raw is not None and not isinstance(raw, bytes):
                    raw = bytes(raw)
                event = decode_event(raw, topic_type, broker_ts=int(msg.timestamp * 1000)
                                     if msg.timestamp else None)
            except InvalidEvent as err:
                await _dead_letter(dlq_topic, err, raw, ev, topic_type)
                continue
            except Exception as exc:  # a bug must not kill the agent or lose the message
                log.exception("ingest failed topic=%s offset=%s", msg.topic, msg.offset)
                internal = InvalidEvent("internal_error", "", f"{type(exc).__name__}: {exc}")
                await _dead_letter(dlq_topic, internal, raw, ev, topic_type)
                continue
            await events_topic.send(key=event.user_id.encode(), value=event.to_json())
            metrics.EVENTS.labels(type=event.type, outcome="accepted").inc()
        release(batch)
        metrics.STAGE_SECONDS.labels(stage="ingest").observe(time.perf_counter() - start)


async def _dead_letter(dlq_topic: TopicT, err: InvalidEvent, raw: bytes | None, ev: EventT[Any],
                       topic_type: str | None) -> None:
    await dlq_topic.send(value=dlq_record(err, raw, _source(ev)))
    metrics.DLQ.labels(reason=err.reason).inc()
    metrics.EVENTS.labels(type=topic_type or "unknown", outcome="invalid").inc()


async def apply_state(batches: AsyncIterator[Sequence[EventT[Any]]], store: StateStore,
                      updates_topic: TopicT, vectors: UserVectorWriter | None = None) -> None:
    """Apply each batch atomically, then announce every user it touched."""
    async for batch in batches:
        hold(batch)
        positioned = []
        for ev in batch:
            src = _source(ev)
            try:
                positioned.append(Positioned(src.topic, src.partition, src.offset,
                                             load_normalised(ev.value)))
            except Exception:
                log.exception("unreadable normalised event topic=%s partition=%s offset=%s",
                              src.topic, src.partition, src.offset)
        if not positioned:
            release(batch)
            continue
        start = time.perf_counter()
        result = await redis_call("apply_batch", partial(store.apply, positioned))
        metrics.STATE_BATCH_SECONDS.observe(time.perf_counter() - start)
        metrics.STATE_BATCH_EVENTS.observe(len(positioned))
        _count(positioned, result.applied, result.duplicates + result.below_watermark,
               result.late)
        if vectors is not None and result.sequences:
            await redis_call("user_vectors", partial(vectors.write, result.sequences))
        if result.online_evaluations:
            metrics.ONLINE_EVALUATIONS.inc(result.online_evaluations)
            metrics.ONLINE_HITS.inc(result.online_hits)
        latest: dict[str, UserUpdate] = {}
        for p in positioned:
            e = p.event
            latest[e.user_id] = UserUpdate(user_id=e.user_id, event_id=e.event_id, ts=e.ts,
                                         received=e.received)
        for update in latest.values():
            await updates_topic.send(key=update.user_id.encode(), value=update.to_json())
        release(batch)
        metrics.STAGE_SECONDS.labels(stage="state").observe(time.perf_counter() - start)


def _count(batch: Sequence[Positioned], applied: int, skipped: int, late: int) -> None:
    metrics.EVENTS.labels(type="all", outcome="applied").inc(applied)
    if skipped:
        metrics.EVENTS.labels(type="all", outcome="duplicate").inc(skipped)
        metrics.DUPLICATES.inc(skipped)
    if late:
        metrics.LATE.inc(late)
