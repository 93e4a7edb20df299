"""Publishing the same events twice (same event_ids) leaves the state of one publication."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from recmodels.datasets import Interaction, read_seq_stream, synthetic_stream
from streamrec.replay import publish
from tests.conftest import SHARED_DATA, Pipeline, applied_count, metric_sum, state_of

pytestmark = pytest.mark.integration

N = 10_000


def _events() -> list[Interaction]:
    games = SHARED_DATA / "games" / "Video.txt"
    return read_seq_stream(games)[:N] if games.is_file() else list(synthetic_stream(N))








def test_same_events_published_twice_count_once(make_pipeline: Callable[..., Pipeline]) -> None:
    events = _events()
    once, twice = make_pipeline(), make_pipeline()
    for p in (once, twice):
        p.start_worker(role="stream")
    asyncio.run(publish(once.settings, events, N))
    asyncio.run(publish(twice.settings, events, N))
    asyncio.run(publish(twice.settings, events, N))

    deadline = time.monotonic() + 120
    duplicates = "streamrec_duplicate_events_total"
    while time.monotonic() < deadline:
        if applied_count(once.settings) >= N and metric_sum(twice.workers[0], duplicates) >= N:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    assert applied_count(once.settings) == N
    assert applied_count(twice.settings) == N
    assert metric_sum(twice.workers[0], "streamrec_duplicate_events_total") == N
    one, two = state_of(once.settings), state_of(twice.settings)
    assert len(one["users"]) > 100
    assert one == two
