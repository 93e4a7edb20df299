"""Recommendation message v1 (contract): the wire format of the ``recommendations`` topic."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import orjson

from serving.ranking import Reason, Scored

REASON_KINDS = ("markov", "sequence", "trending", "popular")


def six_decimals(x: float) -> float:
    """``x`` to 6 decimals, for short messages: half up, 15x faster than ``round(x, 6)``
    (which converts exactly through decimal; a message holds ~20 such numbers), and a
    clean shortest form (an integer over 1e6 is the closest float to that decimal).
    Infinities and NaN pass through."""
    return math.floor(x * 1e6 + 0.5) / 1e6 if -1e300 < x < 1e300 else x


def _reason(reason: Reason, ids: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": reason.kind}
    if reason.after is not None:
        out["after"] = ids[reason.after]
    if reason.p is not None:
        out["p"] = six_decimals(reason.p)
    if reason.score is not None:
        out["score"] = six_decimals(reason.score)
    return out


def recommendation(user_id: str, items: Sequence[Scored], ids: Sequence[str],
                   model_version: str, trigger_event_id: str | None, trigger_ts: int | None,
                   generated_at: int) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "generated_at": generated_at,
        "model_version": model_version,
        "trigger": {"event_id": trigger_event_id, "ts": trigger_ts},
        "items": [
            {"item_id": ids[s.item], "score": six_decimals(s.score),
             "reasons": [_reason(r, ids) for r in s.reasons]}
            for s in items
        ],
    }


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


def validate(message: Any) -> list[str]:
    """Problems with a v1 message (empty list when valid); for consumers and tests."""
    problems: list[str] = []
    if not isinstance(message, dict):
        return ["not an object"]
    for key, kind in (("user_id", str), ("generated_at", int), ("model_version", str),
                      ("trigger", dict), ("items", list)):
        if not isinstance(message.get(key), kind):
            problems.append(f"field '{key}': expected {kind.__name__}")
    for i, item in enumerate(message.get("items") or []):
        if not isinstance(item, dict) or not isinstance(item.get("item_id"), str):
            problems.append(f"items[{i}].item_id: expected string")
            continue
        if not isinstance(item.get("score"), int | float):
            problems.append(f"items[{i}].score: expected number")
        reasons = item.get("reasons")
        if not isinstance(reasons, list) or not reasons:
            problems.append(f"items[{i}].reasons: expected a non-empty list")
            continue
        for r in reasons:
            if not isinstance(r, dict) or r.get("kind") not in REASON_KINDS:
                problems.append(f"items[{i}].reasons: unknown kind {r!r}")
    scores = [it.get("score", 0) for it in message.get("items") or [] if isinstance(it, dict)]
    if any(a < b for a, b in itertools.pairwise(scores)):
        problems.append("items: not ordered best first")
    return problems
