"""The one module that owns Redis key names (DESIGN section 6).

Every key, and every scan pattern over keys, is built here from the prefix; the Lua
scripts of this package build the same names from the prefix they are given.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOUGHT = ":bought"


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
    def markov_pattern(self) -> str:
        """Scan pattern of the Markov rows; it also matches :attr:`markov_totals`."""
        return f"{self.prefix}mk:*"

    def markov_row_of(self, key: str) -> int | None:
        """The item index of a Markov row key; None for any other key."""
        head = f"{self.prefix}mk:"
        suffix = key[len(head):]
        is_row = key.startswith(head) and suffix.isascii() and suffix.isdigit()
        return int(suffix) if is_row else None

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

    @property
    def all_pattern(self) -> str:
        """Scan pattern of every key under the prefix."""
        return f"{self.prefix}*"

    @property
    def user_pattern(self) -> str:
        """Scan pattern of the user hashes; it also matches the :meth:`bought` sets."""
        return f"{self.prefix}u:*"

    def user_of(self, key: str) -> str | None:
        """The user id of a user hash key; None for a bought set or any other key."""
        head = self.user("")
        if not key.startswith(head) or key.endswith(_BOUGHT):
            return None
        return key[len(head):]

    def is_bought(self, key: str) -> bool:
        """Whether ``key`` is a user's bought set."""
        return key.startswith(self.user("")) and key.endswith(_BOUGHT)

    def bought(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}{_BOUGHT}"

    @property
    def bought_pattern(self) -> str:
        """Scan pattern of the bought sets."""
        return f"{self.prefix}u:*{_BOUGHT}"

    def watermark(self, group: str, topic: str, partition: int) -> str:
        return f"{self.prefix}wm:{group}:{topic}:{partition}"

    def watermark_pattern(self, group: str, topic: str) -> str:
        """Scan pattern of the watermarks of every partition of ``topic``."""
        return f"{self.prefix}wm:{group}:{topic}:*"

    def served(self, user_id: str) -> str:
        """String: packed item indexes of the list last served to the user."""
        return f"{self.prefix}served:{user_id}"

    @property
    def served_pattern(self) -> str:
        return f"{self.prefix}served:*"

    def scratch(self, name: str) -> str:
        """A key no state uses, for a measurement's temporary copies (benchmarks)."""
        return f"{self.prefix}w:{name}"

    @property
    def erased(self) -> str:
        """Hash: SHA-1 of a forgotten user's id -> the erasure's time (epoch ms)."""
        return f"{self.prefix}erased"

    @property
    def stats(self) -> str:
        """Hash: ``applied`` (events applied to the state so far)."""
        return f"{self.prefix}stats"

    @property
    def blocked(self) -> str:
        return f"{self.prefix}blocked"

    def model_weights(self, version: str) -> str:
        """String: the safetensors bytes of a published model version."""
        return f"{self.prefix}model:{version}:weights"

    def model_meta(self, version: str) -> str:
        """String: the JSON metadata of a published model version."""
        return f"{self.prefix}model:{version}:meta"

    @property
    def model_current(self) -> str:
        """String: the version serving uses."""
        return f"{self.prefix}model:current"

    @property
    def model_seq(self) -> str:
        """Counter: the number of the last version published."""
        return f"{self.prefix}model:seq"

    @property
    def model_versions(self) -> str:
        """List: the versions kept, oldest first."""
        return f"{self.prefix}model:versions"
