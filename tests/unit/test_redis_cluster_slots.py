"""The local cluster's masters split the 16,384 slots into even contiguous ranges."""

from __future__ import annotations

import pytest

from infra.redis_cluster import SLOTS, slot_ranges


@pytest.mark.parametrize("masters", [1, 3, 5, 7])
def test_the_ranges_cover_every_slot_once_and_differ_by_one_at_most(masters: int) -> None:
    ranges = slot_ranges(masters)
    covered = [slot for first, last in ranges for slot in range(first, last + 1)]
    assert covered == list(range(SLOTS))
    sizes = [last - first + 1 for first, last in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_a_cluster_needs_a_master() -> None:
    with pytest.raises(ValueError, match="at least one"):
        slot_ranges(0)
