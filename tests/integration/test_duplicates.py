"""Publishing the same events twice (same event_ids) leaves the state of one publication."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from recmodels.datasets import Interaction, read_seq_stream, synthetic_stream
from streamrec.keys import Keys
from streamrec.replay import publish
from streams.dump import collect_state
from tests.conftest import SHARED_DATA, Pipeline

pytestmark = pytest.mark.integration

N = 10_000


def _events() -> list[Interaction]:
    games = SHARED_DATA / "games" / "Video.txt"
    return read_seq_stream(games)[:N] if games.is_file() else list(synthetic_stream(N))


async def _applied(p: Pipeline) -> int:
    redis = Redis.from_url(p.settings.redis.url)
    try:
        return int(await redis.hget(Keys(p.settings.redis.prefix).stats, "applied") or 0)
    finally:
        await redis.aclose()


async def _state(p: Pipeline) -> dict:
    redis = Redis.from_url(p.settings.redis.url)
    try:
        return await collect_state(redis, Keys(p.settings.redis.prefix),
                                   p.settings.state.popularity_half_life_s)
    finally:
        await redis.aclose()


def _duplicates_metric(p: Pipeline) -> float:
    import urllib.request

    port = p.workers[0].env["STREAMREC_METRICS__PORT"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    line = next(x for x in text.splitlines()
                if x.startswith("streamrec_duplicate_events_total "))
    return float(line.split()[1])


def test_same_events_published_twice_count_once(make_pipeline: Callable[..., Pipeline]) -> None:
    events = _events()
    once, twice = make_pipeline(), make_pipeline()
    for p in (once, twice):
        p.start_worker(role="stream")
    asyncio.run(publish(once.settings, events, N))
    asyncio.run(publish(twice.settings, events, N))
    asyncio.run(publish(twice.settings, events, N))

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if asyncio.run(_applied(once)) >= N and _duplicates_metric(twice) >= N:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    assert asyncio.run(_applied(once)) == N
    assert asyncio.run(_applied(twice)) == N
    assert _duplicates_metric(twice) == N
    one, two = asyncio.run(_state(once)), asyncio.run(_state(twice))
    assert len(one["users"]) > 100
    assert one == two
