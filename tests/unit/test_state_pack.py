"""Packing a batch for the atomic state script."""

from __future__ import annotations

from streamrec.contracts.event import Event
from streamrec.kernel.settings import StateSettings
from streamrec.state.store import (
    ApplyConfig,
    Positioned,
    Progress,
    id_hash,
    pack_batch,
    tie_break,
)
from tests.event_order import event_key


def test_events_keep_arrival_order_and_name_their_partition() -> None:
    config = ApplyConfig.from_settings("sr:", "grp", StateSettings())
    batch = [Positioned("events.click", 1, 10, Event("e2", "u", "i", "click", 2)),
             Positioned("events.view", 0, 5, Event("e1", "v", "j", "view", 1)),
             Positioned("events.click", 1, 11, Event("e0", "u", "k", "purchase", 3))]
    args = pack_batch(batch, config)
    assert args[:13] == ["sr:", 50, 30, 7 * 86400 * 1000, 128, 3_600_000, "grp",
                         "1.0", "2.0", "4.0", 0, 200, 2]
    assert args[13:21] == ["events.click", 1, -1, -1, "events.view", 0, -1, -1]
    assert args[21] == 3
    records = [r.split("\x1f") for r in str(args[22]).split("\x1e")]
    assert records == [
        ["1", "10", str(id_hash("e2")), "u", "i", "click", "2", str(tie_break("e2"))],
        ["2", "5", str(id_hash("e1")), "v", "j", "view", "1", str(tie_break("e1"))],
        ["1", "11", str(id_hash("e0")), "u", "k", "purchase", "3", str(tie_break("e0"))]]
    assert len(args) == 23


def test_an_event_id_is_known_by_64_bits_of_two_hashes() -> None:
    ids = [f"e-{n}" for n in range(20_000)]
    assert len({(tie_break(i), id_hash(i)) for i in ids}) == len(ids)
    assert all(0 <= id_hash(i) < 2 ** 32 for i in ids)
    assert id_hash("e-1") == id_hash("e-1") != id_hash("e-2")


def test_progress_names_its_partitions_first_with_their_watermarks() -> None:
    config = ApplyConfig.from_settings("sr:", "grp", StateSettings())
    batch = [Positioned("events.view", 0, 5, Event("e1", "v", "j", "view", 1))]
    args = pack_batch(batch, config, {("events.click", 2): Progress(9, 12)})
    assert args[12:21] == [2, "events.click", 2, 9, 12, "events.view", 0, -1, -1]
    assert str(args[22]).split("\x1f")[0] == "2"  # the view names its partition: number 2


def test_a_users_events_are_ordered_by_time_then_type_then_event_id() -> None:
    view, click = Event("b", "u", "i", "view", 5), Event("a", "u", "i", "click", 5)
    purchase, earlier = Event("c", "u", "i", "purchase", 5), Event("z", "u", "j", "purchase", 4)
    twin = Event("d", "u", "k", "view", 5)
    ordered = sorted([purchase, twin, click, earlier, view], key=event_key)
    assert ordered[0] == earlier
    assert ordered[-2:] == [click, purchase]
    assert {ordered[1], ordered[2]} == {view, twin}
    assert tie_break(ordered[1].event_id) < tie_break(ordered[2].event_id)


def test_negative_lateness_disables_the_late_rule() -> None:
    config = ApplyConfig.from_settings("sr:", "g", StateSettings(allowed_lateness_s=-1))
    assert config.allowed_lateness_ms == -1
