"""Holding a producer to a rate: how far ahead of schedule it is after n events."""

from __future__ import annotations

import time
from collections.abc import Callable

MIN_SLEEP_S = 0.002  # shorter waits are not worth a sleep: the next batch catches up


class Pacer:
    """``rate`` events per second from the pacer's creation (None or 0: as fast as
    possible)."""

    def __init__(self, rate: float | None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.rate = rate
        self._clock = clock
        self._start = clock()

    def ahead(self, sent: int) -> float:
        """Seconds to wait after ``sent`` events to keep to the rate; 0 when behind, or
        ahead by less than :data:`MIN_SLEEP_S`."""
        if not self.rate:
            return 0.0
        ahead = sent / self.rate - (self._clock() - self._start)
        return ahead if ahead > MIN_SLEEP_S else 0.0
