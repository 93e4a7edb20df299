"""The published JSON Schemas agree with the code: each is a valid 2020-12 schema, what the
code writes validates, and the ingest path accepts exactly the events the schema accepts,
except for the rules a schema cannot state (listed in the schema's $comment and below)."""

from __future__ import annotations

import json
import string
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from streamrec.contracts.dlq import Source, dlq_record
from streamrec.contracts.event import (
    EVENT_TYPES,
    MAX_ID_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_PROPS_BYTES,
    MAX_TS_MS,
    decode_event,
)
from streamrec.contracts.json_schemas import SCHEMAS, schema
from streamrec.contracts.recommendation import (
    ItemReason,
    Recommendation,
    RecommendedItem,
    validate,
)
from streamrec.contracts.user_update import UserUpdate
from streamrec.kernel.errors import InvalidEvent

EVENT = Draft202012Validator(schema("event.v1.json"))
ASCII_SPACE = " \t\n\v\f\r"


@pytest.mark.parametrize("name", SCHEMAS)
def test_each_schema_is_a_valid_2020_12_schema_whose_examples_validate(name: str) -> None:
    document = schema(name)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(document)
    for example in document.get("examples", []):
        Draft202012Validator(document).validate(example)


def test_what_the_code_writes_validates_against_its_schema() -> None:
    message = Recommendation("u-1", 1_700_000_000_123, "markov", "e-1", 1_700_000_000_000, (
        RecommendedItem("i-2", 0.9, (ItemReason("markov", after="i-1", p=0.3),)),
        RecommendedItem("i-3", 0.5, (ItemReason("popular", score=12.0),))))
    body = orjson.loads(message.to_json())
    Draft202012Validator(schema("recommendation.v1.json")).validate(body)
    assert validate(body) == []
    pulled = dict(body, trigger={"event_id": None, "ts": None})  # GET /recommendations
    Draft202012Validator(schema("recommendation.v1.json")).validate(pulled)
    update = orjson.loads(UserUpdate("u-1", "e-1", 5, received=7).to_json())
    Draft202012Validator(schema("user_update.v1.json")).validate(update)
    record = orjson.loads(dlq_record(InvalidEvent("bad_timestamp", "ts", "no"), b"{}",
                                     Source("events.view", 0, 17)))
    Draft202012Validator(schema("dlq.v1.json")).validate(record)


def test_every_reason_code_of_the_ingest_path_is_in_the_dlq_schema() -> None:
    codes = set(schema("dlq.v1.json")["properties"]["reason"]["enum"])
    bodies = [None, b"x" * (MAX_MESSAGE_BYTES + 1), b"{", b"[]", b"{}",
              b'{"user_id": true, "item_id": "i"}', b'{"user_id": "", "item_id": "i"}',
              b'{"user_id": "' + b"u" * 200 + b'", "item_id": "i"}',
              b'{"user_id": "a\\u0001", "item_id": "i"}',
              b'{"user_id": "u", "item_id": "i", "type": "like"}',
              b'{"user_id": "u", "item_id": "i", "type": "click"}',
              b'{"user_id": "u", "item_id": "i", "ts": "soon"}',
              b'{"user_id": "u", "item_id": "i", "ts": 1, "props": {"a": "' + b"p" * 5000 + b'"}}']
    seen = set()
    for raw in bodies:
        with pytest.raises(InvalidEvent) as caught:
            decode_event(raw, "view")
        seen.add(caught.value.reason)
    assert seen <= codes
    assert codes - seen == {"internal_error"}  # the event path's own, not the decoder's


# ---- the ingest path against the event schema ----------------------------------------------


def _identifier_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    return 0


def cannot_state(body: Any) -> bool:
    """Whether ``body`` touches a rule the schema cannot state (see its $comment)."""
    if not isinstance(body, dict):
        return False
    raw = json.dumps(body, ensure_ascii=False).encode()
    if len(raw) > MAX_MESSAGE_BYTES:
        return True
    body = orjson.loads(raw)  # as the ingest path reads it (integers past 64 bits: floats)
    if any(_identifier_bytes(body.get(f)) > MAX_ID_BYTES
           and len(body[f]) <= MAX_ID_BYTES  # over in bytes, not in characters
           for f in ("event_id", "user_id", "item_id", "session_id")):
        return True
    props = body.get("props")
    if isinstance(props, dict) and len(orjson.dumps(props)) > MAX_PROPS_BYTES:
        return True
    for field in ("type", "ts"):
        value = body.get(field)
        # Python's str.strip() removes more than the six ASCII spaces the schema allows
        if isinstance(value, str) and value.strip() != value.strip(ASCII_SPACE):
            return True
    ts = body.get("ts")
    if isinstance(ts, str):
        text = ts.strip(ASCII_SPACE)
        if text.isascii() and text.isdigit():
            return int(text) > MAX_TS_MS  # the range of digit strings
        return True  # ISO-8601 as Python reads it: the pattern is the usual subset
    return False


def ingest_accepts(body: Any) -> bool:
    kind = body.get("type") if isinstance(body, dict) else None
    normal = kind.strip().lower() if isinstance(kind, str) else None
    topic_type = normal if normal in EVENT_TYPES else "view"  # as if on its own topic
    try:
        decode_event(json.dumps(body, ensure_ascii=False).encode(), topic_type,
                     broker_ts=1_700_000_000_000)
    except InvalidEvent:
        return False
    return True


TRICKY_STRINGS = st.one_of(
    st.text(max_size=12), st.text(alphabet=string.printable, max_size=12),
    st.sampled_from(["", " ", "view", " Click ", "PURCHASE", "like", "0", "17", " 42 ",
                     "1700000000000", "2024-05-01T10:00:00Z", "2024-05-01", "yesterday",
                     "a\x00b", "tab\there", "x" * 129, "é" * 70, "\u0085", "1e3"]))
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**60, 2**60),
                   st.floats(allow_nan=False, allow_infinity=False), TRICKY_STRINGS,
                   st.lists(st.integers(), max_size=2),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
IDS = st.one_of(st.text(st.characters(blacklist_categories=("Cc",)), min_size=1, max_size=20),
                st.integers(-2**63, 2**64), st.floats(-1e20, 1e20), VALUES)
NEAR_VALID = st.fixed_dictionaries(
    {"user_id": IDS, "item_id": IDS},
    optional={"event_id": st.one_of(IDS, st.none()), "session_id": st.one_of(IDS, st.none()),
              "type": st.one_of(st.sampled_from(["view", "click", "purchase", " Click ",
                                                 "VIEW", None]), VALUES),
              "ts": st.one_of(st.integers(0, MAX_TS_MS), st.integers(-5, 2**60),
                              st.integers(0, MAX_TS_MS).map(str), st.none(), VALUES),
              "props": st.one_of(st.none(), st.dictionaries(st.text(max_size=5),
                                                            st.integers(), max_size=3),
                                 VALUES),
              "extra": VALUES})
BODIES = st.one_of(
    NEAR_VALID,
    st.dictionaries(st.sampled_from(["event_id", "user_id", "item_id", "type", "ts",
                                     "session_id", "props", "extra"]), VALUES, max_size=8),
    VALUES)


def test_the_generated_messages_hold_events_the_schema_accepts_and_ones_it_rejects() -> None:
    find(BODIES, lambda b: EVENT.is_valid(b) and not cannot_state(b) and "ts" in b)
    find(BODIES, lambda b: isinstance(b, dict) and not EVENT.is_valid(b) and "user_id" in b)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODIES)
def test_the_ingest_path_accepts_exactly_what_the_event_schema_accepts(body: Any) -> None:
    """Both ways at once: every message the schema accepts is ingested, every one it
    rejects goes to the dead-letter topic (rules it cannot state aside)."""
    if cannot_state(body):
        return
    assert EVENT.is_valid(body) == ingest_accepts(body), (body, list(EVENT.iter_errors(body)))
