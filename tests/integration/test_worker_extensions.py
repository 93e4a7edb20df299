"""A team's own Faust agent and table on the worker app (examples/purchase_counter.py),
beside the event path in ``worker.consumer = faust``: both see every event."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable

import pytest

from recmodels.datasets import synthetic_stream
from streams.producer import publish
from tests.conftest import Pipeline, applied_count

pytestmark = pytest.mark.integration

N = 2000


def _purchases(port: str, user_id: str) -> int:
    url = f"http://127.0.0.1:{port}/examples/purchases/{user_id}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(json.loads(response.read())["purchases"])


def test_own_agent_and_table_count_beside_the_event_path(
        make_pipeline: Callable[..., Pipeline]) -> None:
    events = list(synthetic_stream(N, seed=41, late=0.0))
    expected = Counter(e.user_id for e in events if e.type == "purchase")
    assert len(expected) >= 5
    pipeline = make_pipeline(worker={"consumer": "faust",
                                     "extensions": ["examples.purchase_counter:install"]})
    worker = pipeline.start_worker(role="stream")
    asyncio.run(publish(pipeline.settings, events, N))
    port = worker.env["STREAMREC_METRICS__PORT"]
    deadline = time.monotonic() + 90
    users = [user for user, _ in expected.most_common(5)] + ["nobody"]
    counted: dict[str, int] = {}
    while time.monotonic() < deadline:
        counted = {user: _purchases(port, user) for user in users}
        if applied_count(pipeline.settings) >= N and all(
                counted[u] == expected[u] for u in users):
            break
        time.sleep(0.5)
    assert applied_count(pipeline.settings) == N  # the event path applied everything
    assert counted == {user: expected[user] for user in users}


def test_a_bad_extension_is_named(make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(worker={"consumer": "faust", "extensions": ["examples.nope:install"]})
    result = pipeline.cli("worker", "--role", "stream", timeout=60)
    assert result.returncode != 0
    assert "worker.extensions entry 'examples.nope:install': cannot import" in result.stderr
    assert "Traceback" not in result.stderr
