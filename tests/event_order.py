"""The documented total order of a user's events, spelled out for the tests: event time,
then type (view < click < purchase), then the CRC-32 of the event id."""

from __future__ import annotations

import zlib

from streamrec.contracts.event import Event

RANK = {"view": 0, "click": 1, "purchase": 2}


def event_key(event: Event) -> tuple[int, int, int]:
    return event.ts, RANK[event.type], zlib.crc32(event.event_id.encode())
