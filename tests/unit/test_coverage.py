"""Served-catalogue coverage over a sliding window."""

from __future__ import annotations

from recmodels.scoring.coverage import CoverageWindow


def test_coverage_counts_distinct_items_in_the_window_only() -> None:
    window = CoverageWindow(window_s=120, bucket_s=60)
    window.add([1, 2, 3], now_s=0)
    window.add([3, 4], now_s=61)
    assert window.ratio(n_items=10, now_s=61) == 0.4
    assert window.ratio(n_items=10, now_s=185) == 0.0  # both buckets aged out
    window.add([5], now_s=200)
    assert window.ratio(n_items=4, now_s=200) == 0.25
    assert window.ratio(n_items=0, now_s=200) == 0.0
