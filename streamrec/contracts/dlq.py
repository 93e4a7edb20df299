"""Dead-letter record v1 (contract): what goes to ``events.dlq`` for a rejected message."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson

from streamrec.kernel.errors import InvalidEvent


@dataclass(frozen=True, slots=True)
class Source:
    topic: str
    partition: int
    offset: int


def dlq_record(error: InvalidEvent, raw: bytes | None, source: Source) -> bytes:
    """``{"reason", "field", "detail", "source": {...}, "raw": base64}`` as JSON bytes."""
    return orjson.dumps({
        "reason": error.reason,
        "field": error.field,
        "detail": error.detail,
        "source": {"topic": source.topic, "partition": source.partition,
                   "offset": source.offset},
        "raw": base64.b64encode(raw or b"").decode("ascii"),
    })
