"""The atomic state step against a real Redis: watermarks, dedupe, lateness, trimming."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from streamrec.keys import Keys
from streamrec.settings import StateSettings
from streams.dump import collect_state
from streams.events import Event
from streams.state import ApplyConfig, Positioned, RedisStateStore
from tests.conftest import StackInfo

pytestmark = pytest.mark.integration


def _events(*spec: tuple[str, str, str, int]) -> list[Positioned]:
    return [Positioned("ev", 0, n, Event(f"id-{n}", u, i, k, ts))
            for n, (u, i, k, ts) in enumerate(spec)]


def _run(stack: StackInfo, state: StateSettings, *batches: list[Positioned]):
    async def go():
        redis = Redis.from_url(stack.redis_url)
        prefix = f"s{uuid.uuid4().hex[:6]}:"
        store = RedisStateStore(redis, ApplyConfig.from_settings(prefix, "g", state))
        results = [await store.apply(b) for b in batches]
        dump = await collect_state(redis, Keys(prefix), state.popularity_half_life_s)
        await redis.aclose()
        return results, dump

    return asyncio.run(go())


def test_redelivered_batch_is_skipped_by_the_watermark(stack: StackInfo) -> None:
    batch = _events(("u", "a", "view", 1), ("u", "b", "view", 2))
    (first, again), dump = _run(stack, StateSettings(popularity_half_life_s=0), batch, batch)
    assert (first.applied, again.applied, again.below_watermark) == (2, 0, 2)
    assert dump["popularity"] == {"a": 1, "b": 1}
    assert dump["markov"] == {"a": {"total": 1, "next": {"b": 1}}}


def test_same_event_id_at_another_offset_is_a_duplicate(stack: StackInfo) -> None:
    first = _events(("u", "a", "view", 1))
    replayed = [Positioned("ev", 0, 7, first[0].event)]
    (_, again), dump = _run(stack, StateSettings(popularity_half_life_s=0), first, replayed)
    assert (again.applied, again.duplicates) == (0, 1)
    assert dump["users"]["u"]["events"] == 1


def test_late_event_counts_popularity_but_not_sequence(stack: StackInfo) -> None:
    hour = 3_600_000
    batch = _events(("u", "a", "view", 10 * hour), ("u", "b", "purchase", 8 * hour))
    (result,), dump = _run(stack, StateSettings(popularity_half_life_s=0,
                                                allowed_lateness_s=3600), batch)
    assert result.late == 1
    assert dump["users"]["u"]["sequence"] == ["a"]
    assert dump["users"]["u"]["bought"] == ["b"]
    assert dump["popularity"] == {"a": 1, "b": 4}
    assert dump["markov"] == {}


def test_markov_row_keeps_its_top_k(stack: StackInfo) -> None:
    spec = []
    for n, succ in enumerate(["x", "y", "y", "z", "z", "z"]):
        spec += [(f"u{n}", "a", "view", 1), (f"u{n}", succ, "view", 2)]
    (_,), dump = _run(stack, StateSettings(popularity_half_life_s=0, markov_row_size=2),
                      _events(*spec))
    assert dump["markov"]["a"] == {"total": 6, "next": {"y": 2, "z": 3}}
