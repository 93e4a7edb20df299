"""Catalogue coverage of served lists over a sliding window (pure, clock injected)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class CoverageWindow:
    """Distinct items served in the last ``window_s`` seconds, kept in ``bucket_s`` buckets."""

    def __init__(self, window_s: float = 600.0, bucket_s: float = 60.0) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._buckets: deque[tuple[int, set[int]]] = deque()

    def add(self, items: Iterable[int], now_s: float) -> None:
        key = int(now_s // self.bucket_s)
        if not self._buckets or self._buckets[-1][0] != key:
            self._buckets.append((key, set()))
        self._buckets[-1][1].update(items)
        self._expire(now_s)

    def _expire(self, now_s: float) -> None:
        oldest = int((now_s - self.window_s) // self.bucket_s)
        while self._buckets and self._buckets[0][0] <= oldest:
            self._buckets.popleft()

    def ratio(self, n_items: int, now_s: float) -> float:
        self._expire(now_s)
        if n_items <= 0:
            return 0.0
        served: set[int] = set()
        for _, items in self._buckets:
            served |= items
        return len(served) / n_items
