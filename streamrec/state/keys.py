"""The one module that owns Redis key names (DESIGN section 6)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "sr:"

    @property
    def item_index(self) -> str:
        return f"{self.prefix}item:idx"

    @property
    def item_ids(self) -> str:
        return f"{self.prefix}item:ids"

    def markov_row(self, idx: int) -> str:
        return f"{self.prefix}mk:{idx}"

    @property
    def markov_totals(self) -> str:
        return f"{self.prefix}mk:total"

    @property
    def popularity(self) -> str:
        return f"{self.prefix}pop"

    @property
    def popularity_meta(self) -> str:
        """Hash: ``landmark_step`` of the forward-decay scores and ``max_ts`` seen."""
        return f"{self.prefix}pop:meta"

    def user(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}"

    def bought(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}:bought"

    def watermark(self, group: str, topic: str, partition: int) -> str:
        return f"{self.prefix}wm:{group}:{topic}:{partition}"

    def dedupe(self, event_id: str) -> str:
        return f"{self.prefix}dedupe:{event_id}"

    def served(self, user_id: str) -> str:
        """String: packed item indexes of the list last served to the user."""
        return f"{self.prefix}served:{user_id}"

    @property
    def stats(self) -> str:
        """Hash: ``applied`` (events applied to the state so far)."""
        return f"{self.prefix}stats"

    @property
    def blocked(self) -> str:
        return f"{self.prefix}blocked"
