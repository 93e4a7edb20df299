"""Acknowledge a batch only once it is fully done.

Faust's ``take_events`` acks every event of a batch when the batch body exits, even when
it exits by an exception or a cancellation (worker stopping, Redis down at shutdown).
Holding one extra reference on each message for the duration of the batch means such an
exit leaves the messages unacknowledged, so their offsets are never committed and they
are delivered again; :func:`release` drops the reference once the work is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faust.types import EventT


def hold(batch: Sequence[EventT[Any]]) -> None:
    for event in batch:
        event.message.incref()


def release(batch: Sequence[EventT[Any]]) -> None:
    for event in batch:
        event.ack()
