"""A producer held to a rate waits exactly as long as it is ahead of schedule."""

from __future__ import annotations

import pytest

from streamrec.kernel.pacing import Pacer


def test_the_wait_is_how_far_ahead_of_the_rate_the_sends_are() -> None:
    now = [10.0]
    pacer = Pacer(100.0, clock=lambda: now[0])  # 100 events/s from t = 10
    assert pacer.ahead(50) == pytest.approx(0.5)  # 50 sent at once: due by t = 10.5
    now[0] = 10.4
    assert pacer.ahead(50) == pytest.approx(0.1)
    now[0] = 10.499
    assert pacer.ahead(50) == 0.0  # 1 ms ahead: not worth a sleep
    now[0] = 11.0
    assert pacer.ahead(50) == 0.0  # behind schedule: no wait


def test_no_rate_never_waits() -> None:
    assert Pacer(None).ahead(10**9) == 0.0
    assert Pacer(0).ahead(10**9) == 0.0
