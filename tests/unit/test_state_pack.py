"""Packing a batch for the atomic state script."""

from __future__ import annotations

from streamrec.settings import StateSettings
from streams.events import Event
from streams.state import ApplyConfig, Positioned, pack_batch


def test_events_keep_arrival_order_and_name_their_partition() -> None:
    config = ApplyConfig.from_settings("sr:", "grp", StateSettings())
    batch = [Positioned("events.click", 1, 10, Event("e2", "u", "i", "click", 2)),
             Positioned("events.view", 0, 5, Event("e1", "v", "j", "view", 1)),
             Positioned("events.click", 1, 11, Event("e0", "u", "k", "purchase", 3))]
    args = pack_batch(batch, config)
    assert args[:8] == ["sr:", 50, 0, 7 * 86400 * 1000, 86400, 3_600_000, "grp", 2]
    assert args[8:12] == ["events.click", 1, "events.view", 0]
    assert args[12] == 3
    records = [r.split("\x1f") for r in str(args[13]).split("\x1e")]
    assert records == [["1", "10", "e2", "u", "i", "click", "2", "2.0"],
                       ["2", "5", "e1", "v", "j", "view", "1", "1.0"],
                       ["1", "11", "e0", "u", "k", "purchase", "3", "4.0"]]
    assert len(args) == 14


def test_negative_lateness_disables_the_late_rule() -> None:
    config = ApplyConfig.from_settings("sr:", "g", StateSettings(allowed_lateness_s=-1))
    assert config.allowed_lateness_ms == -1
