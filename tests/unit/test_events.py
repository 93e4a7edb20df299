"""Event schema v1: normalisation and every rejection reason."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.errors import InvalidEvent
from streams.events import decode_event, derive_event_id, load_normalised


def _raw(**body: object) -> bytes:
    return orjson.dumps(body)


def test_valid_event_is_normalised() -> None:
    event = decode_event(_raw(event_id="e-1", user_id=42, item_id=9.0, type=" View ",
                              ts="2023-11-14T22:13:20Z", session_id="s", props={"p": 1}),
                         topic_type="view")
    assert (event.user_id, event.item_id, event.type) == ("42", "9", "view")
    assert event.ts == 1_700_000_000_000
    assert event.props == {"p": 1}
    assert load_normalised(event.to_json()) == event


def test_missing_ts_takes_broker_timestamp_and_missing_id_is_stable() -> None:
    a = decode_event(_raw(user_id="u", item_id="i", type="click"), broker_ts=123)
    b = decode_event(_raw(user_id="u", item_id="i", type="click"), broker_ts=123)
    assert a.ts == 123
    assert a.event_id == b.event_id == derive_event_id("u", "i", "click", 123)
    assert a.event_id != derive_event_id("u", "i", "click", 124)


def test_type_is_taken_from_a_typed_topic_when_missing() -> None:
    assert decode_event(_raw(user_id="u", item_id="i", ts=1), topic_type="purchase").type == \
        "purchase"


@pytest.mark.parametrize(("raw", "topic", "reason", "field"), [
    (b"{nope", None, "not_json", ""),
    (b"[1, 2]", None, "not_object", ""),
    (b"x" * (16 * 1024 + 1), None, "too_large", ""),
    (_raw(item_id="i", type="view", ts=1), None, "missing_field", "user_id"),
    (_raw(user_id="u", type="view", ts=1), None, "missing_field", "item_id"),
    (_raw(user_id="", item_id="i", type="view", ts=1), None, "empty_field", "user_id"),
    (_raw(user_id="u" * 129, item_id="i", type="view", ts=1), None, "too_long", "user_id"),
    (_raw(user_id="u", item_id="i\n", type="view", ts=1), None, "control_character",
     "item_id"),
    (_raw(user_id=True, item_id="i", type="view", ts=1), None, "bad_type", "user_id"),
    (_raw(user_id="u", item_id="i", type="like", ts=1), None, "unknown_type", "type"),
    (_raw(user_id="u", item_id="i", ts=1), None, "missing_field", "type"),
    (_raw(user_id="u", item_id="i", type="view", ts=1), "click", "type_mismatch", "type"),
    (_raw(user_id="u", item_id="i", type="view", ts="yesterday"), None, "bad_timestamp", "ts"),
    (_raw(user_id="u", item_id="i", type="view", ts=-5), None, "bad_timestamp", "ts"),
    (_raw(user_id="u", item_id="i", type="view", ts=1.5), None, "bad_timestamp", "ts"),
    (_raw(user_id="u", item_id="i", type="view"), None, "missing_field", "ts"),
    (_raw(user_id="u", item_id="i", type="view", ts=1, props=[1]), None, "bad_type", "props"),
    (_raw(user_id="u", item_id="i", type="view", ts=1, props={"b": "z" * 4100}), None,
     "props_too_large", "props"),
])
def test_rejections_name_reason_and_field(raw: bytes, topic: str | None, reason: str,
                                          field: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_event(raw, topic_type=topic)
    assert (err.value.reason, err.value.field) == (reason, field)
    if field:
        assert f"'{field}'" in str(err.value)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.dictionaries(st.sampled_from(["user_id", "item_id", "type", "ts",
                                                  "event_id", "props", "session_id"]),
                                 st.one_of(st.none(), st.booleans(), st.integers(),
                                           st.floats(), st.text(max_size=40),
                                           st.lists(st.integers(), max_size=3),
                                           st.dictionaries(st.text(max_size=5),
                                                           st.integers(), max_size=3)))
                 .map(lambda body: json.dumps(body).encode())))
def test_decoding_only_ever_raises_invalid_event(raw: bytes) -> None:
    try:
        event = decode_event(raw, topic_type=None, broker_ts=1)
    except InvalidEvent as err:
        assert err.reason
        return
    assert event.user_id and event.item_id and event.type in ("view", "click", "purchase")
