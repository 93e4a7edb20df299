"""Event schema v1: normalisation and every rejection reason."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.contracts.event import decode_event, derive_event_id
from streamrec.kernel.errors import InvalidEvent

MAX_PROPS_BYTES = 4096  # the contract (DESIGN: props at most 4 KiB serialised)
MAX_TS_MS = 2**53 - 1  # the largest integer every JSON reader keeps exactly


def _raw(**body: object) -> bytes:
    return orjson.dumps(body)


def test_valid_event_is_normalised() -> None:
    event = decode_event(_raw(event_id="e-1", user_id=42, item_id=9.0, type=" View ",
                              ts="2023-11-14T22:13:20Z", session_id="s", props={"p": 1}),
                         topic_type="view")
    assert (event.user_id, event.item_id, event.type) == ("42", "9", "view")
    assert event.ts == 1_700_000_000_000
    assert event.props == {"p": 1}
    assert (event.event_id, event.session_id) == ("e-1", "s")


@pytest.mark.parametrize("kind", ["view", "click", "purchase"])
def test_each_type_is_accepted_from_its_own_topic(kind: str) -> None:
    event = decode_event(_raw(user_id="u", item_id="i", type=kind, ts=5), topic_type=kind)
    assert (event.type, event.ts) == (kind, 5)


@pytest.mark.parametrize(("ts", "expected"), [(0, 0), (MAX_TS_MS, MAX_TS_MS),
                                              ("1700000000000", 1_700_000_000_000),
                                              (1.7e12, 1_700_000_000_000)])
def test_timestamps_at_the_edges_of_the_range_are_accepted(ts: object, expected: int) -> None:
    assert decode_event(_raw(user_id="u", item_id="i", type="view", ts=ts)).ts == expected


@pytest.mark.parametrize("ts", [-1, MAX_TS_MS + 1, [1], {"t": 1}, "²", "١٢٣"])
def test_timestamps_out_of_range_or_of_another_kind_are_rejected(ts: object) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_event(_raw(user_id="u", item_id="i", type="view", ts=ts))
    assert (err.value.reason, err.value.field) == ("bad_timestamp", "ts")


def test_props_up_to_the_limit_are_accepted_one_byte_more_is_not() -> None:
    overhead = len(orjson.dumps({"p": ""}))
    fits = {"p": "x" * (MAX_PROPS_BYTES - overhead)}
    assert decode_event(_raw(user_id="u", item_id="i", type="view", ts=1, props=fits)).props \
        == fits
    with pytest.raises(InvalidEvent) as err:
        decode_event(_raw(user_id="u", item_id="i", type="view", ts=1,
                          props={"p": fits["p"] + "x"}))
    assert (err.value.reason, err.value.field) == ("props_too_large", "props")


@pytest.mark.parametrize(("body", "field"), [
    ({"user_id": True, "item_id": "i", "type": "view", "ts": 1}, "user_id"),
    ({"user_id": "u", "item_id": "i", "type": 3, "ts": 1}, "type"),
    ({"user_id": "u", "item_id": ["i"], "type": "view", "ts": 1}, "item_id"),
])
def test_values_of_the_wrong_kind_are_bad_type(body: dict[str, object], field: str) -> None:
    raw = json.dumps(body).encode()
    with pytest.raises(InvalidEvent) as err:
        decode_event(raw)
    assert (err.value.reason, err.value.field) == ("bad_type", field)


def test_a_derived_event_id_is_stable_across_versions() -> None:
    """Replays of events without an id dedupe only while the derivation stays the same."""
    assert derive_event_id("u", "i", "click", 123) == \
        "d-" + __import__("hashlib").blake2b(b"u\x1fi\x1fclick\x1f123",
                                              digest_size=16).hexdigest()


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


def test_ids_of_128_bytes_are_accepted_129_are_too_long() -> None:
    event = decode_event(_raw(user_id="é" * 64, item_id="i", type="view", ts=1))  # 128 bytes
    assert event.user_id == "é" * 64
    with pytest.raises(InvalidEvent) as err:
        decode_event(_raw(user_id="é" * 64 + "x", item_id="i", type="view", ts=1))
    assert (err.value.reason, err.value.field) == ("too_long", "user_id")


def test_a_boolean_timestamp_is_a_bad_timestamp() -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_event(_raw(user_id="u", item_id="i", type="view", ts=True))
    assert (err.value.reason, err.value.field) == ("bad_timestamp", "ts")


def test_iso_timestamps_without_a_zone_are_utc_and_offsets_are_honoured() -> None:
    naive = decode_event(_raw(user_id="u", item_id="i", type="view", ts="2023-11-14T22:13:20"))
    shifted = decode_event(_raw(user_id="u", item_id="i", type="view",
                                ts="2023-11-14T23:13:20+01:00"))
    assert naive.ts == shifted.ts == 1_700_000_000_000


def test_a_message_of_16_kib_is_read_one_byte_more_is_too_large() -> None:
    body = _raw(user_id="u", item_id="i", type="view", ts=1)
    fits = body + b" " * (16 * 1024 - len(body))  # JSON allows trailing whitespace
    assert decode_event(fits).user_id == "u"
    with pytest.raises(InvalidEvent) as err:
        decode_event(fits + b" ")
    assert (err.value.reason, err.value.field) == ("too_large", "")


def test_a_message_without_a_value_is_an_empty_message() -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_event(None)
    assert (err.value.reason, err.value.field) == ("empty_message", "")
