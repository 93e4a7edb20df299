"""Event schema v1 (contract): decoding, validation and normalisation of input events.

This module owns the wire format of behaviour events. Every rule failure raises
:class:`InvalidEvent` with a stable ``reason`` code (used as a metric label and in the DLQ
record) and the field at fault.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from streamrec.kernel.errors import InvalidEvent

EVENT_TYPES: Final = ("view", "click", "purchase")
MAX_MESSAGE_BYTES: Final = 16 * 1024
MAX_ID_BYTES: Final = 128
MAX_PROPS_BYTES: Final = 4 * 1024
MAX_TS_MS: Final = 2**53 - 1

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Event:
    """A valid, normalised behaviour event."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: int
    session_id: str | None = None
    props: dict[str, Any] | None = None
    received: int | None = None  # broker timestamp (ms) of the input message, set at ingest


def derive_event_id(user_id: str, item_id: str, type_: str, ts: int) -> str:
    """Stable id for events that come without one, so replays dedupe."""
    digest = hashlib.blake2b(
        f"{user_id}\x1f{item_id}\x1f{type_}\x1f{ts}".encode(), digest_size=16
    ).hexdigest()
    return f"d-{digest}"


def _identifier(body: dict[str, Any], field: str, required: bool) -> str | None:
    if field not in body or body[field] is None:
        if required:
            raise InvalidEvent("missing_field", field, "required field is missing")
        return None
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidEvent("bad_type", field, f"expected a string, got {type(value).__name__}")
    if isinstance(value, float):  # finite: orjson refuses NaN and infinities (not_json)
        text = str(int(value)) if value.is_integer() else repr(value)
    else:
        text = str(value)
    if not text:
        raise InvalidEvent("empty_field", field, "must not be empty")
    if len(text.encode()) > MAX_ID_BYTES:
        raise InvalidEvent("too_long", field, f"longer than {MAX_ID_BYTES} bytes")
    if _CONTROL.search(text):
        raise InvalidEvent("control_character", field, "contains a control character")
    return text


def check_identifier(field: str, value: str) -> str:
    """``value`` as an id of the event's ``field``, by the ingest path's rules (not empty,
    at most 128 bytes, no control characters); :class:`InvalidEvent` names the field."""
    text = _identifier({field: value}, field, True)
    assert text is not None  # required: never None
    return text


def _event_type(body: dict[str, Any], topic_type: str | None) -> str:
    raw = body.get("type")
    if raw is None:
        if topic_type is None:
            raise InvalidEvent("missing_field", "type", "required field is missing")
        return topic_type
    if not isinstance(raw, str):
        raise InvalidEvent("bad_type", "type", f"expected a string, got {type(raw).__name__}")
    value = raw.strip().lower()
    if value not in EVENT_TYPES:
        raise InvalidEvent(
            "unknown_type", "type", f"expected one of view, click, purchase, got {raw[:40]!r}"
        )
    if topic_type is not None and value != topic_type:
        raise InvalidEvent(
            "type_mismatch", "type", f"{value!r} published to the {topic_type!r} topic"
        )
    return value


def parse_ts(value: Any) -> int:
    """Integer epoch milliseconds from an int, an integral float or an ISO-8601 string."""
    if isinstance(value, bool):
        raise InvalidEvent("bad_timestamp", "ts", "expected integer milliseconds, got a boolean")
    if isinstance(value, int):
        ts = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise InvalidEvent("bad_timestamp", "ts", f"expected integer milliseconds, got {value}")
        ts = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():  # not '²': a digit to str, not to int
            ts = int(text)
        else:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise InvalidEvent(
                    "bad_timestamp", "ts",
                    f"expected integer milliseconds or ISO-8601, got {value[:40]!r}",
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            ts = int(parsed.timestamp() * 1000)
    else:
        raise InvalidEvent(
            "bad_timestamp", "ts", f"expected integer milliseconds, got {type(value).__name__}"
        )
    if not 0 <= ts <= MAX_TS_MS:
        raise InvalidEvent("bad_timestamp", "ts", f"out of range: {ts}")
    return ts


def decode_event(raw: bytes | None, topic_type: str | None = None,
                 broker_ts: int | None = None) -> Event:
    """Decode and validate one input message; raise :class:`InvalidEvent` on any rule."""
    if raw is None:
        raise InvalidEvent("empty_message", "", "message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidEvent("too_large", "", f"message of {len(raw)} bytes exceeds "
                                            f"{MAX_MESSAGE_BYTES} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", "", f"not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidEvent("not_object", "", f"expected a JSON object, got {type(body).__name__}")

    user_id = _identifier(body, "user_id", required=True)
    item_id = _identifier(body, "item_id", required=True)
    assert user_id is not None and item_id is not None
    type_ = _event_type(body, topic_type)
    if body.get("ts") is None:
        if broker_ts is None:
            raise InvalidEvent("missing_field", "ts", "no ts and no broker timestamp")
        ts = parse_ts(broker_ts)
    else:
        ts = parse_ts(body["ts"])
    session_id = _identifier(body, "session_id", required=False)
    props = body.get("props")
    if props is not None:
        if not isinstance(props, dict):
            raise InvalidEvent("bad_type", "props",
                               f"expected an object, got {type(props).__name__}")
        if len(orjson.dumps(props)) > MAX_PROPS_BYTES:
            raise InvalidEvent("props_too_large", "props",
                               f"serialised props exceed {MAX_PROPS_BYTES} bytes")
    event_id = _identifier(body, "event_id", required=False)
    if event_id is None:
        event_id = derive_event_id(user_id, item_id, type_, ts)
    return Event(event_id=event_id, user_id=user_id, item_id=item_id, type=type_, ts=ts,
                 session_id=session_id, props=props, received=broker_ts)
