"""The event-time merge of the co-partitioned input topics (pure)."""

from __future__ import annotations

from streamrec.contracts.event import Event
from streamrec.state.store import Positioned
from streams.merge import EventTimeMerge


def _records(topic: str, partition: int, spec: list[tuple[str, int]], first: int = 0
             ) -> list[Positioned]:
    kind = topic.rsplit(".", maxsplit=1)[-1]
    return [Positioned(topic, partition, first + n, Event(f"{topic}-{n + first}", user, "i",
                                                           kind, ts))
            for n, (user, ts) in enumerate(spec)]


V, C, P = "events.view", "events.click", "events.purchase"


def test_a_backlog_read_topic_by_topic_is_released_in_event_time_order() -> None:
    merge = EventTimeMerge()
    purchases = _records(P, 0, [("u", 3), ("u", 9)])
    merge.add(purchases)
    # views and clicks not fetched yet (lag > 0): nothing may pass them
    assert merge.release({(V, 0): 5, (C, 0): 2, (P, 0): 0}, 0) == []
    assert merge.commit_limits() == {(P, 0): 0}
    merge.add(_records(C, 0, [("u", 4), ("u", 8)]))
    assert merge.release({(V, 0): 5, (C, 0): 0, (P, 0): 0}, 0) == []
    merge.add(_records(V, 0, [("u", 1), ("u", 5), ("u", 7), ("u", 10), ("u", 12)]))
    out = merge.release({(V, 0): 0, (C, 0): 0, (P, 0): 0}, 0)
    assert [p.event.ts for p in out] == [1, 3, 4, 5, 7, 8, 9, 10, 12]
    assert merge.commit_limits() == {}


def test_a_partition_still_behind_stops_the_merge_when_it_runs_dry() -> None:
    merge = EventTimeMerge()
    merge.add(_records(V, 0, [("u", 1), ("u", 6)]))
    merge.add(_records(P, 0, [("u", 2), ("u", 3), ("u", 9)]))
    out = merge.release({(V, 0): 4, (P, 0): 0}, 0)
    # views run dry after ts 6 with more in their log: the purchase at 9 waits for them
    assert [p.event.ts for p in out] == [1, 2, 3, 6]
    assert merge.commit_limits() == {(P, 0): 2}
    assert merge.held((P, 0)) == 1


def test_partition_groups_are_merged_apart() -> None:
    merge = EventTimeMerge()
    merge.add(_records(V, 0, [("u", 5)]) + _records(V, 1, [("w", 1)]))
    # partition 1's clicks are behind: only group 0 moves
    out = merge.release({(V, 0): 0, (C, 0): 0, (V, 1): 0, (C, 1): 3}, 0)
    assert [p.partition for p in out] == [0]


def test_caught_up_partitions_hold_nothing_back_without_idle_time() -> None:
    merge = EventTimeMerge(idle_ms=0)
    merge.add(_records(V, 0, [("u", 5), ("u", 1)]))
    out = merge.release({(V, 0): 0, (C, 0): 0, (P, 0): 0}, 0)
    assert [p.event.ts for p in out] == [1, 5], "released in event-time order"


def test_idle_time_waits_for_a_caught_up_partition_then_moves_on() -> None:
    merge = EventTimeMerge(idle_ms=100)
    merge.add(_records(V, 0, [("u", 5)]))
    lags = {(V, 0): 0, (C, 0): 0}
    assert merge.release(lags, 1_000) == []
    assert merge.release(lags, 1_050) == []
    assert [p.event.ts for p in merge.release(lags, 1_100)] == [5]


def test_unknown_lag_holds_the_group_back() -> None:
    merge = EventTimeMerge()
    merge.add(_records(V, 0, [("u", 5)]))
    assert merge.release({(V, 0): 0, (C, 0): None}, 0) == []


def test_clear_forgets_what_is_held() -> None:
    merge = EventTimeMerge()
    merge.add(_records(V, 0, [("u", 5)]))
    merge.release({(V, 0): 0, (C, 0): 1}, 0)
    merge.clear()
    assert merge.commit_limits() == {}


def test_every_partition_group_that_can_move_is_released() -> None:
    merge = EventTimeMerge()
    merge.add(_records(V, 0, [("u", 5)]) + _records(V, 1, [("w", 1)]) +
              _records(V, 2, [("x", 3)]))
    out = merge.release({(V, 0): 0, (V, 1): 0, (V, 2): 0}, 0)
    assert sorted(p.partition for p in out) == [0, 1, 2]
    assert merge.commit_limits() == {}


def test_a_partition_no_longer_assigned_holds_nothing_back() -> None:
    merge = EventTimeMerge()
    merge.add(_records(C, 0, [("u", 1)]))
    # more clicks in the log: merged by the heads, the group waits once they run dry
    assert [p.event.ts for p in merge.release({(C, 0): 2}, 0)] == [1]
    merge.add(_records(V, 0, [("u", 5)]))
    # the click partition was revoked (absent from the lags): it gives nothing more
    assert [p.event.ts for p in merge.release({(V, 0): 0}, 0)] == [5]


def test_one_record_not_yet_fetched_holds_the_group_back() -> None:
    merge = EventTimeMerge()
    merge.add(_records(P, 0, [("u", 9)]))
    assert merge.release({(V, 0): 1, (P, 0): 0}, 0) == []


def test_partitions_all_behind_release_only_up_to_the_first_that_runs_dry() -> None:
    merge = EventTimeMerge()
    merge.add(_records(V, 0, [("u", 1), ("u", 6)]))
    merge.add(_records(P, 0, [("u", 2), ("u", 3), ("u", 9)]))
    out = merge.release({(V, 0): 4, (P, 0): 2}, 0)
    assert [p.event.ts for p in out] == [1, 2, 3, 6]
    assert merge.held((P, 0)) == 1
