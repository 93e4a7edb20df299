"""The same events give the same state: published twice (same event_ids), or published in
different cross-topic orders before the worker starts (in event-time order, or topic by
topic as after an outage). On the product's mix: views, clicks and purchases on their three
topics, funnels on one item, equal timestamps within a user, late events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from recmodels.datasets import Interaction, synthetic_stream
from streamrec.replay import publish
from tests.conftest import Pipeline, applied_count, metric_sum, state_of

pytestmark = pytest.mark.integration

N = 10_000


def _events() -> list[Interaction]:
    return list(synthetic_stream(N, seed=23))


def _wait_idle(pipeline: Pipeline, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while applied_count(pipeline.settings) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)


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


def test_topic_by_topic_backlog_gives_the_state_of_time_order(
        make_pipeline: Callable[..., Pipeline]) -> None:
    """Published before the worker starts: once in event-time order, once all purchases,
    then all clicks, then all views (each topic in its own order), as after an outage."""
    events = _events()
    by_time = sorted(events, key=lambda e: e.ts)
    by_topic = [e for kind in ("purchase", "click", "view") for e in events if e.type == kind]
    ordered, backlog = make_pipeline(), make_pipeline()
    asyncio.run(publish(ordered.settings, by_time, N))
    asyncio.run(publish(backlog.settings, by_topic, N))
    for p in (ordered, backlog):
        p.start_worker(role="stream")
    for p in (ordered, backlog):
        _wait_idle(p, N)
    assert applied_count(ordered.settings) == applied_count(backlog.settings) == N
    assert metric_sum(backlog.workers[0], "streamrec_late_events_total") == 0
    one, two = state_of(ordered.settings), state_of(backlog.settings)
    assert sum(len(u["sequence"]) for u in one["users"].values()) > N // 2
    assert one == two
