"""Forgetting users (erasure on request): every key of the user goes, and the erasure is
recorded by the SHA-1 of their id so that the state step skips their events up to the
erasure if they are delivered or replayed again (``forget_users.lua``). Their
contributions to the shared aggregates (Markov counts, popularity) stay: those hold no
user id (see docs/privacy.md)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from redis.asyncio import Redis

from streamrec.state.keys import Keys

_SCRIPT = resources.files("streamrec.state").joinpath("forget_users.lua").read_text()


class Eraser:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._prefix = keys.prefix
        self._script = redis.register_script(_SCRIPT)

    async def forget(self, user_ids: Sequence[str], now_ms: int) -> dict[str, int]:
        """Forget these users at ``now_ms``; returns the keys deleted per user (0: the user
        had no state, and is recorded as forgotten all the same)."""
        if not user_ids:
            return {}
        deleted = await self._script(args=[self._prefix, now_ms, *user_ids])
        return {user: int(n) for user, n in zip(user_ids, deleted, strict=True)}
