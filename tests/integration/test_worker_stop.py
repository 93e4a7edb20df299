"""A worker stopped in the middle of a stream exits cleanly; another one finishes the
stream, and every event is applied exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from recmodels.datasets import synthetic_stream
from streams.producer import publish
from tests.conftest import Pipeline, applied_count, wait_applied

pytestmark = pytest.mark.integration

N = 20_000


def test_a_worker_stopped_mid_stream_exits_cleanly_and_nothing_is_lost(
        make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(state={"batch_size": 100})  # many batches in flight
    worker = pipeline.start_worker(role="all")
    asyncio.run(publish(pipeline.settings, list(synthetic_stream(N, seed=5)), N))
    wait_applied(pipeline.settings, 2_000)
    worker.stop()  # SIGTERM while batches are applied and lists published
    assert worker.proc is not None
    assert worker.proc.returncode == 0, worker.log_tail()
    assert "crash" not in worker.log_tail().lower()
    stopped_at = applied_count(pipeline.settings)
    assert stopped_at < N, "the stop has to land mid-stream"

    pipeline.start_worker(role="all")
    wait_applied(pipeline.settings, N)
    time.sleep(1.0)  # anything applied twice would show up now
    assert applied_count(pipeline.settings) == N
