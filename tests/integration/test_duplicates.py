"""The same events give the same state: published twice (same event_ids), or published in
different cross-topic orders before the worker starts (in event-time order, or topic by
topic as after an outage). On the product's mix: views, clicks and purchases on their three
topics, funnels on one item, equal timestamps within a user, late events."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import pytest

from recmodels.datasets import Interaction, synthetic_stream
from streams.producer import publish
from tests.conftest import Pipeline, applied_count, metric_sum, start_workers, state_of

pytestmark = pytest.mark.integration

N = 10_000


def _events() -> list[Interaction]:
    return list(synthetic_stream(N, seed=23))


def _wait_idle(pipeline: Pipeline, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while applied_count(pipeline.settings) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)


# the pipeline under test consumes in each mode; the reference always in batch mode, so
# the faust runs also show that both modes give the same state
CONSUMERS = pytest.mark.parametrize("consumer", ["batch", "faust"])


# Both pipelines consume while 10,000 events spanning 2.5 h of event time are published in
# about 2 s: a second of skew between the topics on a loaded machine (a producer's retry, a
# slow fetch) is then more than an hour of event time, past the default allowed lateness,
# and which events are late would depend on that timing. The bound that stays is the
# reorder window, wider than any user's history here: nothing may be late.
WITHIN_WINDOW = {"allowed_lateness_s": -1, "reorder_window": 64}


@CONSUMERS
def test_same_events_published_twice_count_once(make_pipeline: Callable[..., Pipeline],
                                                consumer: str) -> None:
    events = _events()
    once = make_pipeline(state=WITHIN_WINDOW)
    twice = make_pipeline(state=WITHIN_WINDOW, worker={"consumer": consumer})
    start_workers((once, "stream"), (twice, "stream"))
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
    for p in (once, twice):
        assert metric_sum(p.workers[0], "streamrec_late_events_total") == 0
    one, two = state_of(once.settings), state_of(twice.settings)
    assert len(one["users"]) > 100
    assert one == two


@CONSUMERS
def test_topic_by_topic_backlog_gives_the_state_of_time_order(
        make_pipeline: Callable[..., Pipeline], consumer: str) -> None:
    """Published before the worker starts: once in event-time order, once all purchases,
    then all clicks, then all views (each topic in its own order), as after an outage."""
    events = _events()
    by_time = sorted(events, key=lambda e: e.ts)
    by_topic = [e for kind in ("purchase", "click", "view") for e in events if e.type == kind]
    ordered, backlog = make_pipeline(), make_pipeline(worker={"consumer": consumer})
    asyncio.run(publish(ordered.settings, by_time, N))
    asyncio.run(publish(backlog.settings, by_topic, N))
    start_workers((ordered, "stream"), (backlog, "stream"))
    for p in (ordered, backlog):
        _wait_idle(p, N)
    assert applied_count(ordered.settings) == applied_count(backlog.settings) == N
    assert metric_sum(backlog.workers[0], "streamrec_late_events_total") == 0
    one, two = state_of(ordered.settings), state_of(backlog.settings)
    assert sum(len(u["sequence"]) for u in one["users"].values()) > N // 2
    assert one == two


@CONSUMERS
def test_live_skew_between_topics_gives_the_state_of_time_order(
        make_pipeline: Callable[..., Pipeline], consumer: str) -> None:
    """Published live at 1,000 events/s with every click and purchase sent up to 500 ms
    after its place in time (views on time), against the same events in time order
    before the worker starts: same state, nothing late."""
    n, rate = 5000, 1000.0
    events = list(synthetic_stream(n, seed=29, late=0.0))
    rng = random.Random(3)
    send_at = [k / rate + (0 if e.type == "view" else rng.uniform(0, 0.5))
               for k, e in enumerate(events)]
    skewed = [e for _, e in sorted(zip(send_at, events, strict=True), key=lambda p: p[0])]
    assert sum(a.type != b.type for a, b in zip(events, skewed, strict=True)) > n // 10
    ordered, live = make_pipeline(), make_pipeline(worker={"consumer": consumer})
    asyncio.run(publish(ordered.settings, sorted(events, key=lambda e: e.ts), n))
    start_workers((ordered, "stream"), (live, "stream"))
    asyncio.run(publish(live.settings, skewed, n, rate=rate))
    for p in (ordered, live):
        _wait_idle(p, n)
    assert applied_count(live.settings) == n
    assert metric_sum(live.workers[0], "streamrec_late_events_total") == 0
    assert state_of(ordered.settings) == state_of(live.settings)
