"""Packing a batch for the atomic state script."""

from __future__ import annotations

from streamrec.settings import StateSettings
from streams.events import Event
from streams.state import ApplyConfig, Positioned, pack_batch


def test_events_are_grouped_by_partition_in_offset_order() -> None:
    config = ApplyConfig.from_settings("sr:", "grp", StateSettings())
    batch = [Positioned("t", 1, 11, Event("e2", "u", "i", "click", 2)),
             Positioned("t", 0, 5, Event("e1", "v", "j", "view", 1)),
             Positioned("t", 1, 10, Event("e0", "u", "k", "purchase", 3))]
    args = pack_batch(batch, config)
    assert args[:8] == ["sr:", 50, 0, 7 * 86400 * 1000, 86400, 3_600_000, "grp", 2]
    assert args[8:11] == ["t", 1, 2]
    assert args[11:18] == [10, "e0", "u", "k", "purchase", 3, "4.0"]
    assert args[18:25] == [11, "e2", "u", "i", "click", 2, "2.0"]
    assert args[25:28] == ["t", 0, 1]


def test_negative_lateness_disables_the_late_rule() -> None:
    config = ApplyConfig.from_settings("sr:", "g", StateSettings(allowed_lateness_s=-1))
    assert config.allowed_lateness_ms == -1
