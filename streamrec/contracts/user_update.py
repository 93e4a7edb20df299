"""Wire format of ``streamrec.user-updates``: a user's state changed (internal topic)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class UserUpdate:
    user_id: str
    event_id: str
    ts: int
    received: int | None = None  # broker timestamp of the input event, for freshness

    def to_json(self) -> bytes:
        return orjson.dumps({"user_id": self.user_id, "event_id": self.event_id, "ts": self.ts,
                             "rx": self.received})

    @classmethod
    def from_json(cls, raw: bytes) -> UserUpdate:
        body = orjson.loads(raw)
        return cls(user_id=str(body["user_id"]), event_id=str(body["event_id"]),
                   ts=int(body["ts"]), received=body.get("rx"))
