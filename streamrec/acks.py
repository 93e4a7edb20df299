"""Acknowledge a batch only once it is fully done.

Faust's ``take_events`` acks every event of a batch when the batch body exits, even when
it exits by an exception or a cancellation (worker stopping, Redis down at shutdown).
Holding one extra reference on each message for the duration of the batch means such an
exit leaves the messages unacknowledged, so their offsets are never committed and they
are delivered again; :func:`release` drops the reference once the work is done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from faust.types import EventT


def hold(batch: Sequence[EventT[Any]]) -> None:
    for event in batch:
        event.message.incref()


def release(batch: Sequence[EventT[Any]]) -> None:
    for event in batch:
        event.ack()


def backlog_after(highwater: Callable[[Any], int | None]) -> Callable[[Sequence[EventT[Any]]],
                                                                      int]:
    """Events already in the log after a take, over the partitions of the take (the
    consumer's high-water marks against the take's last offsets)."""
    def backlog(take: Sequence[EventT[Any]]) -> int:
        last: dict[Any, int] = {}
        for event in take:
            last[event.message.tp] = event.message.offset
        waiting = 0
        for tp, offset in last.items():
            end = highwater(tp)
            if end is not None:
                waiting += max(0, end - offset - 1)
        return waiting
    return backlog


async def held_batches(batches: AsyncIterator[Sequence[EventT[Any]]], max_events: int,
                       coalesce_s: float, backlog: Callable[[Sequence[EventT[Any]]], int],
                       backlog_events: int, clock: Callable[[], float] = time.monotonic,
                       ) -> AsyncIterator[list[EventT[Any]]]:
    """Hold every event, and join consecutive takes while a backlog is waiting.

    When at least ``backlog_events`` more events wait in the log after a take, the next
    take joins the same batch, up to ``max_events``, or until ``coalesce_s`` after the
    batch's first take (also when no further take comes). Under load: fewer, larger
    batches (one state step and one list per user per batch); at low rates every take is
    its own batch, so latency stays low. The next take is already being filled while the
    consumer works on the batch just yielded.
    """
    takes = aiter(batches)
    next_take: asyncio.Future[Sequence[EventT[Any]]] | None = None
    pending: list[EventT[Any]] = []
    started = 0.0
    try:
        while True:
            if next_take is None:
                next_take = asyncio.ensure_future(anext(takes))
            if pending:
                remaining = coalesce_s - (clock() - started)
                done, _ = await asyncio.wait({next_take}, timeout=max(remaining, 0.0))
                if not done:  # no further take in time: the batch is complete
                    yield pending
                    pending = []
                    continue
            try:
                batch = await next_take
            except StopAsyncIteration:
                if pending:
                    yield pending
                return
            next_take = None
            hold(batch)
            if not pending:
                started = clock()
            pending.extend(batch)
            if len(pending) >= max_events or clock() - started >= coalesce_s \
                    or backlog(batch) < backlog_events:
                next_take = asyncio.ensure_future(anext(takes))  # filled meanwhile
                yield pending
                pending = []
    finally:
        if next_take is not None:
            next_take.cancel()
