"""The state step's result is a function of the set of events, not of their arrival order.

A user's views, clicks and purchases arrive on three topics; batch boundaries, restarts and
redeliveries interleave them differently each time. Against the real script on a real Redis:
any interleaving that keeps each topic's own order, cut into any batches, gives the same
state, as long as every event arrives before ``reorder_window`` later events of its user.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import struct
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from streamrec.contracts.event import Event
from streamrec.kernel.settings import StateSettings
from streamrec.state.dump import collect_state
from streamrec.state.keys import Keys
from streamrec.state.store import ApplyConfig, Positioned, RedisStateStore
from tests.conftest import StackInfo
from tests.event_order import event_key

pytestmark = pytest.mark.integration

TYPES = ("view", "click", "purchase")


@st.composite
def user_events(draw: st.DrawFn, min_events: int = 2) -> list[Event]:
    """A few users' funnels: views, clicks and purchases of a few items, many on one item,
    with equal timestamps within a user."""
    events: list[Event] = []
    n = draw(st.integers(min_value=min_events, max_value=40))
    for k in range(n):
        user = draw(st.sampled_from(("u1", "u2", "u3")))
        item = draw(st.sampled_from(("a", "b", "c", "d")))
        kind = draw(st.sampled_from(TYPES))
        ts = draw(st.integers(min_value=0, max_value=12)) * 1000
        events.append(Event(f"e{k}", user, item, kind, ts))
    return events


def _by_topic(events: list[Event]) -> dict[str, list[Event]]:
    """Each topic in its own order: event time, as producers publish."""
    return {kind: sorted((e for e in events if e.type == kind), key=event_key)
            for kind in TYPES}


def _interleave(topics: dict[str, list[Event]], picks: list[int]) -> list[Positioned]:
    """Merge the topics, taking from the topic ``picks`` names next (cycling), each topic's
    records keeping their offsets."""
    cursors = dict.fromkeys(topics, 0)
    out: list[Positioned] = []
    total = sum(len(v) for v in topics.values())
    k = 0
    while len(out) < total:
        live = [t for t in TYPES if cursors[t] < len(topics[t])]
        topic = live[picks[k % len(picks)] % len(live)] if picks else live[0]
        k += 1
        out.append(Positioned(topic, 0, cursors[topic], topics[topic][cursors[topic]]))
        cursors[topic] += 1
    return out


def _batches(stream: list[Positioned], cuts: list[int]) -> list[list[Positioned]]:
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]


async def _state(redis: Redis, state: StateSettings, batches: list[list[Positioned]]
                 ) -> dict[str, Any]:
    prefix = f"o{uuid.uuid4().hex[:8]}:"
    keys = Keys(prefix)
    store = RedisStateStore(redis, ApplyConfig.from_settings(prefix, "g", state))
    late = 0
    for batch in batches:
        late += (await store.apply(batch)).late
    dump = await collect_state(redis, keys, state.popularity_half_life_s)
    ids = [x.decode() for x in await redis.lrange(keys.item_ids, 0, -1)]  # type: ignore[misc]
    for user in dump["users"]:
        win, seen = await redis.hmget(keys.user(user), "win", "ids")  # type: ignore[misc]
        dump["users"][user]["window"] = [
            (ts, tie, idh, ids[item], rank)
            for ts, tie, idh, item, rank in struct.iter_unpack("<dIIIB", win or b"")]
        # the ids remembered for dedupe beyond the window are state too
        dump["users"][user]["remembered"] = list(struct.iter_unpack("<II", seen or b""))
    dump["late"] = late
    return dump


def _run(stack: StackInfo, state: StateSettings, *runs: list[list[Positioned]]
         ) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        redis = Redis.from_url(stack.redis_url)
        try:
            return [await _state(redis, state, batches) for batches in runs]
        finally:
            await redis.aclose()

    return asyncio.run(go())


# a window wider than any user's events here: every interleaving is within the bound
ORDERED = StateSettings(popularity_half_life_s=3600, allowed_lateness_s=-1, reorder_window=64)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(events=user_events(), picks=st.lists(st.integers(0, 2), max_size=30),
       cuts=st.lists(st.integers(0, 200), max_size=6))
def test_any_interleaving_of_the_topics_gives_the_state_of_time_order(
        stack: StackInfo, events: list[Event], picks: list[int], cuts: list[int]) -> None:
    topics = _by_topic(events)
    in_order = sorted((Positioned(e.type, 0, topics[e.type].index(e), e) for e in events),
                      key=lambda p: event_key(p.event))
    shuffled = _interleave(topics, picks)
    reference, other = _run(stack, ORDERED, [in_order], _batches(shuffled, cuts))
    assert other == reference
    assert reference["late"] == 0


def test_topic_by_topic_backlog_gives_the_state_of_time_order(stack: StackInfo) -> None:
    """All purchases, then all clicks, then all views (as after an outage), in batches."""
    rng = random.Random(5)
    events = [Event(f"f{k}", f"u{rng.randrange(3)}", f"i{rng.randrange(6)}",
                    rng.choice(TYPES), 1000 * (k // 2)) for k in range(60)]
    topics = _by_topic(events)
    in_order = sorted((Positioned(e.type, 0, topics[e.type].index(e), e) for e in events),
                      key=lambda p: event_key(p.event))
    backlog = [Positioned(t, 0, n, e) for t in ("purchase", "click", "view")
               for n, e in enumerate(topics[t])]
    reference, other = _run(stack, ORDERED, [in_order], _batches(backlog, [7, 19, 30, 44]))
    assert other == reference
    assert reference["users"]["u1"]["sequence"], "the users have sequences"
    assert any(len(row["next"]) > 1 for row in reference["markov"].values())


def test_an_event_beyond_the_window_is_late_and_counts_only_in_popularity(
        stack: StackInfo) -> None:
    state = StateSettings(popularity_half_life_s=0, allowed_lateness_s=-1, reorder_window=3)
    newer = [Positioned("view", 0, n, Event(f"n{n}", "u", item, "view", 10 + n))
             for n, item in enumerate("bcd")]
    old = [Positioned("purchase", 0, 0, Event("old", "u", "a", "purchase", 1))]
    (dump,) = _run(stack, state, [newer + old])
    assert dump["late"] == 1
    assert dump["users"]["u"]["sequence"] == ["b", "c", "d"]
    assert dump["users"]["u"]["bought"] == ["a"]
    assert dump["users"]["u"]["events"] == 4
    assert dump["popularity"] == {"a": 4, "b": 1, "c": 1, "d": 1}
    assert "a" not in dump["markov"]


def test_an_insert_corrects_the_transition_it_splits(stack: StackInfo) -> None:
    """a then c arrive; b, between them in time, comes later: a->c is taken back."""
    state = StateSettings(popularity_half_life_s=0, allowed_lateness_s=-1)
    a, b, c = (Event(f"x{i}", "u", item, kind, ts) for i, (item, kind, ts) in
               enumerate([("a", "view", 1), ("b", "click", 2), ("c", "view", 3)]))
    (dump,) = _run(stack, state, [[Positioned("view", 0, 0, a), Positioned("view", 0, 1, c)],
                                  [Positioned("click", 0, 0, b)]])
    assert dump["markov"] == {"a": {"total": 2, "next": {"b": 2}},
                              "b": {"total": 1, "next": {"c": 1}}}
    assert dump["users"]["u"]["sequence"] == ["a", "b", "c"]
    assert dump["late"] == 0


def test_an_insert_after_evictions_gives_the_state_of_time_order(stack: StackInfo) -> None:
    """A window of 3 that has evicted older events (the sequence keeps them): an event
    arriving behind two newer ones is inserted in place, as if it had come in time."""
    state = StateSettings(popularity_half_life_s=0, allowed_lateness_s=-1, reorder_window=3)
    events = [Event(f"w{k}", "u", item, kind, ts) for k, (item, kind, ts) in enumerate(
        [("a", "view", 1), ("b", "view", 2), ("b", "click", 3), ("c", "view", 4),
         ("d", "view", 6), ("e", "purchase", 7), ("x", "click", 5)])]
    in_time = sorted(events, key=event_key)
    arrived = events  # x (ts 5) arrives after d and e (ts 6, 7)
    reference, other = _run(stack, state,
                            [[Positioned("t", 0, n, e) for n, e in enumerate(in_time)]],
                            [[Positioned("t", 0, n, e)] for n, e in enumerate(arrived)])
    assert other == reference
    assert reference["users"]["u"]["sequence"] == ["a", "b", "c", "x", "d", "e"]
    assert [w[3] for w in reference["users"]["u"]["window"]] == ["x", "d", "e"]
    assert reference["users"]["u"]["last_ts"] == 7
    assert reference["late"] == 0


def test_equal_timestamps_are_ordered_view_click_purchase_whatever_the_arrival(
        stack: StackInfo) -> None:
    """At one millisecond a user's view comes before their click and their click before
    their purchase, whichever topic delivers first (the documented tie-break)."""
    state = StateSettings(popularity_half_life_s=0, allowed_lateness_s=-1)
    spec = [(f"p{k}", f"u{k}", kind, item) for k in range(6)
            for kind, item in (("purchase", "c"), ("click", "b"), ("view", "a"))]
    arrived = [Positioned(kind, 0, n, Event(eid + kind, user, item, kind, 1000))
               for n, (eid, user, kind, item) in enumerate(spec)]
    (dump,) = _run(stack, state, [[p] for p in arrived])
    for k in range(6):
        assert dump["users"][f"u{k}"]["sequence"] == ["a", "b", "c"]
    assert dump["markov"] == {"a": {"total": 12, "next": {"b": 12}},
                              "b": {"total": 24, "next": {"c": 24}}}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(events=user_events(min_events=15), swaps=st.lists(st.booleans(), min_size=10, max_size=40),
       cuts=st.lists(st.integers(0, 200), max_size=6),
       length=st.integers(min_value=2, max_value=6))
def test_small_windows_that_evict_give_the_state_of_time_order(
        stack: StackInfo, events: list[Event], swaps: list[bool], cuts: list[int],
        length: int) -> None:
    """One user, a window of 3 events and sequences of 2-6 items: each event arrives at most
    one place late (adjacent swaps), within the bound of any window of 2 or more."""
    state = StateSettings(popularity_half_life_s=0, allowed_lateness_s=-1, reorder_window=3,
                          sequence_length=length)
    ordered = sorted((dataclasses.replace(e, user_id="u") for e in events), key=event_key)
    arrived = list(ordered)
    k = 0
    for swap in swaps:
        if k + 1 < len(arrived) and swap:
            arrived[k], arrived[k + 1] = arrived[k + 1], arrived[k]
            k += 2
        else:
            k += 1
    reference, other = _run(
        stack, state, [[Positioned("t", 0, n, e) for n, e in enumerate(ordered)]],
        _batches([Positioned("t", 0, n, e) for n, e in enumerate(arrived)], cuts))
    assert other == reference
    assert reference["late"] == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(events=user_events(min_events=6), picks=st.lists(st.integers(0, 2), max_size=30),
       cuts=st.lists(st.integers(0, 200), max_size=6))
def test_a_bounded_bought_set_is_the_same_in_any_interleaving(
        stack: StackInfo, events: list[Event], picks: list[int], cuts: list[int]) -> None:
    """Trimmed to its 2 latest purchases at every step, a user's bought set still ends the
    same whatever the order purchases arrive in (equal timestamps included)."""
    state = ORDERED.model_copy(update={"bought_kept": 2})
    topics = _by_topic(events)
    in_order = sorted((Positioned(e.type, 0, topics[e.type].index(e), e) for e in events),
                      key=lambda p: event_key(p.event))
    reference, other = _run(stack, state, [in_order], _batches(_interleave(topics, picks), cuts))
    assert other == reference
    for user, kept in reference["users"].items():
        bought = {e.item_id for e in events if e.user_id == user and e.type == "purchase"}
        assert len(kept["bought"]) == min(2, len(bought))
        assert set(kept["bought"]) <= bought


def test_the_bought_set_keeps_the_latest_purchases_and_drops_a_late_old_one(
        stack: StackInfo) -> None:
    state = ORDERED.model_copy(update={"bought_kept": 2})
    bought = [("a", 4000), ("b", 1000), ("c", 3000), ("a", 500), ("d", 2000), ("b", 200)]
    events = [Positioned("purchase", 0, n, Event(f"p{n}", "u", item, "purchase", ts))
              for n, (item, ts) in enumerate(bought)]
    (dump,) = _run(stack, state, [events[:3], events[3:]])
    assert dump["users"]["u"]["bought"] == ["a", "c"]  # the two latest: a at 4000, c at 3000
    (unbounded,) = _run(stack, ORDERED, [events])
    assert unbounded["users"]["u"]["bought"] == ["a", "b", "c", "d"]


def test_purchases_at_the_same_time_keep_the_same_items_whatever_indexes_they_got(
        stack: StackInfo) -> None:
    """Item indexes are given in arrival order, so two runs index items differently; a tie
    in purchase time goes by item id, not by index."""
    state = ORDERED.model_copy(update={"bought_kept": 1})
    views = [Event(f"v{k}", "w", item, "view", 0) for k, item in enumerate("xyz")]
    bought = [Event(f"p{k}", "u", item, "purchase", 500) for k, item in enumerate("zyx")]
    first = [Positioned("view", 0, n, e) for n, e in enumerate(views)] + \
        [Positioned("purchase", 0, n, e) for n, e in enumerate(bought)]
    # the purchases first: z, y, x get the indexes x, y, z got in the first run
    second = [Positioned("purchase", 0, n, e) for n, e in enumerate(bought)] + \
        [Positioned("view", 0, n, e) for n, e in enumerate(views)]
    one, two = _run(stack, state, [first], [second])
    assert one["users"]["u"]["bought"] == two["users"]["u"]["bought"] == ["z"]
