"""Two stream workers and two serving workers share 4 partitions (consumer-group
rebalancing) and end with the same Redis state as one worker."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable

import pytest

from infra.processes import WorkerProcess
from recmodels.datasets import synthetic_stream
from streams.producer import publish
from tests.conftest import Pipeline, applied_count, metric_sum, start_workers, state_of

pytestmark = pytest.mark.e2e

N = 8000


def _events() -> list:
    """The product's mix of views, clicks and purchases on three topics."""
    return list(synthetic_stream(N, seed=41))






def _metrics(worker: WorkerProcess) -> str:
    port = worker.env["STREAMREC_METRICS__PORT"]
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _partitions(worker: WorkerProcess, topic: str) -> set[str]:
    found = set()
    for line in _metrics(worker).splitlines():
        if line.startswith("streamrec_consumer_lag_messages{") and f'topic="{topic}"' in line:
            found.add(line.split('partition="')[1].split('"')[0])
    return found




def test_two_plus_two_workers_share_partitions_and_match_one_worker(
        make_pipeline: Callable[..., Pipeline]) -> None:
    events = _events()
    many = make_pipeline(kafka={"partitions": 4}, worker={"lag_interval_s": 1.0})
    one = make_pipeline(kafka={"partitions": 4})
    started = start_workers((many, "stream"), (many, "stream"), (many, "serving"),
                            (many, "serving"), (one, "all"))
    stream, serving = started[:2], started[2:4]
    # let the groups settle: each stream worker owns some partitions of the input topics
    t = many.settings.topics
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        owned = [_partitions(w, t.view) for w in stream]
        if all(owned) and set.union(*owned) == {"0", "1", "2", "3"}:
            break
        time.sleep(0.5)
    assert all(owned), f"each stream worker owns partitions: {owned}"
    assert not owned[0] & owned[1]
    assert owned[0] | owned[1] == {"0", "1", "2", "3"}
    # co-partitioned: a user's views, clicks and purchases are read by the same worker
    for w, views in zip(stream, owned, strict=True):
        assert _partitions(w, t.click) == _partitions(w, t.purchase) == views

    for p in (many, one):
        asyncio.run(publish(p.settings, events, len(events)))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if applied_count(many.settings) >= N and applied_count(one.settings) >= N:
            break
        time.sleep(0.5)
    time.sleep(2)
    assert applied_count(many.settings) == applied_count(one.settings) == N
    assert state_of(many.settings) == state_of(one.settings)
    assert all(metric_sum(w, "streamrec_recommendations_total") > 0 for w in serving), \
        "both serving workers published lists"
    assert all(metric_sum(w, "streamrec_events_total") > 0 for w in stream)
