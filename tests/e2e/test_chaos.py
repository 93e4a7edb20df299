"""Effectively-once state through crashes and a Redis outage (short versions of the chaos
benchmark; benchmarks/chaos.py runs the 50,000-event, 5-kill, 3-seed version)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.chaos import ChaosRunner
from recmodels.datasets import Interaction, synthetic_stream

pytestmark = pytest.mark.e2e


def _events(n: int) -> list[Interaction]:
    """The product's mix: views, clicks and purchases on their three topics, equal
    timestamps within a user, late events (recmodels.datasets.synthetic_stream)."""
    return list(synthetic_stream(n, seed=31))


@pytest.fixture(scope="module")
def runner() -> Iterator[ChaosRunner]:
    with ChaosRunner(_events(5000), timeout_s=240) as r:
        yield r


# every fault runs with each worker.consumer; the clean run is the batch consumer's, so the
# faust runs also show that both modes give the same state
CONSUMERS = pytest.mark.parametrize("consumer", ["batch", "faust"])
# one seed for every fault: the clean run it is compared with is made once
SEED = 11


@CONSUMERS
def test_two_kills_leave_the_state_of_a_clean_run(runner: ChaosRunner, consumer: str) -> None:
    verdict = runner.check(seed=SEED, kills=2, consumer=consumer)
    assert len(verdict.chaos.kills) == 2
    assert all(0 < k < 5000 for k in verdict.chaos.kills), "kills land mid-replay"
    assert verdict.differing_keys == []
    assert verdict.chaos.applied == verdict.clean.applied == 5000


@CONSUMERS
def test_redis_down_for_10_s_loses_and_doubles_nothing(runner: ChaosRunner,
                                                      consumer: str) -> None:
    verdict = runner.check(seed=SEED, kills=0, redis_outage_s=10, consumer=consumer)
    assert verdict.chaos.seconds >= 10, "the outage fell within the replay"
    assert verdict.differing_keys == []
    assert verdict.chaos.applied == 5000


@CONSUMERS
def test_redis_crashes_that_lose_applied_writes_leave_the_state_of_a_clean_run(
        runner: ChaosRunner, consumer: str) -> None:
    """Redis SIGKILLed twice and restarted from an append-only file that misses its last
    few hundred applied events (offsets already committed), as a machine crash with
    appendfsync everysec would: the worker reads those partitions again from the state's
    own watermarks."""
    verdict = runner.check(seed=SEED, kills=0, redis_crashes=2, lose_writes=True,
                           consumer=consumer)
    assert len(verdict.chaos.redis_crashes) == 2
    assert all(lost > 0 for lost in verdict.chaos.lost_on_crash), verdict.chaos
    assert verdict.differing_keys == []
    assert verdict.chaos.applied == 5000
