"""The atomic state step against a real Redis: watermarks, dedupe, lateness, trimming."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from streamrec.contracts.event import Event
from streamrec.kernel.settings import StateSettings
from streamrec.state.dump import collect_state
from streamrec.state.keys import Keys
from streamrec.state.store import ApplyConfig, Positioned, Progress, RedisStateStore, StateRegressed
from tests.conftest import StackInfo

pytestmark = pytest.mark.integration


def _events(*spec: tuple[str, str, str, int]) -> list[Positioned]:
    return [Positioned("ev", 0, n, Event(f"id-{n}", u, i, k, ts))
            for n, (u, i, k, ts) in enumerate(spec)]


def _run(stack: StackInfo, state: StateSettings, *batches: list[Positioned]):
    async def go():
        redis = Redis.from_url(stack.redis_url)
        prefix = f"s{uuid.uuid4().hex[:6]}:"
        store = RedisStateStore(redis, ApplyConfig.from_settings(prefix, "g", state))
        results = [await store.apply(b) for b in batches]
        dump = await collect_state(redis, Keys(prefix), state.popularity_half_life_s)
        await redis.aclose()
        return results, dump

    return asyncio.run(go())


def test_redelivered_batch_is_skipped_by_the_watermark(stack: StackInfo) -> None:
    batch = _events(("u", "a", "view", 1), ("u", "b", "view", 2))
    (first, again), dump = _run(stack, StateSettings(popularity_half_life_s=0), batch, batch)
    assert (first.applied, again.applied, again.below_watermark) == (2, 0, 2)
    assert dump["popularity"] == {"a": 1, "b": 1}
    assert dump["markov"] == {"a": {"total": 1, "next": {"b": 1}}}


def test_same_event_id_at_another_offset_is_a_duplicate(stack: StackInfo) -> None:
    first = _events(("u", "a", "view", 1))
    replayed = [Positioned("ev", 0, 7, first[0].event)]
    (_, again), dump = _run(stack, StateSettings(popularity_half_life_s=0), first, replayed)
    assert (again.applied, again.duplicates) == (0, 1)
    assert dump["users"]["u"]["events"] == 1


def test_duplicates_are_found_among_the_users_last_d_events_and_no_further(
        stack: StackInfo) -> None:
    """D = 6 event ids per user (W = 3 in the window, 3 more remembered): the same events
    published again count once while they are among the user's last 6, and again when
    they are older; another user's events, and memory, are per user."""
    state = StateSettings(popularity_half_life_s=0, reorder_window=3, dedupe_events=6)
    first = _events(*[("u", f"i{n}", "view", 10 * n) for n in range(8)])
    recent = [Positioned("ev", 0, 100 + n, p.event) for n, p in enumerate(first[2:])]
    oldest = [Positioned("ev", 0, 200 + n, p.event) for n, p in enumerate(first[:2])]
    (_, again, old), dump = _run(stack, state, first, recent, oldest)
    assert (again.applied, again.duplicates) == (0, 6)
    # beyond the horizon: not recognised; older than the window, so late (counted in
    # popularity and the event count, not in the sequence)
    assert (old.applied, old.duplicates, old.late) == (2, 0, 2)
    assert dump["users"]["u"]["events"] == 10
    assert dump["users"]["u"]["sequence"] == [f"i{n}" for n in range(8)]


def test_with_dedupe_off_an_event_published_again_counts_again(stack: StackInfo) -> None:
    """dedupe_events = 0: only the watermarks skip what was applied; the same event at a
    new offset is applied again (a mutant that kept the window's ids on survived before)."""
    state = StateSettings(popularity_half_life_s=0, dedupe_events=0)
    first = _events(("u", "a", "view", 1), ("u", "b", "view", 2))
    again = [Positioned("ev", 0, 10 + n, p.event) for n, p in enumerate(first)]
    (_, second), dump = _run(stack, state, first, again)
    assert (second.applied, second.duplicates) == (2, 0)
    assert dump["users"]["u"]["events"] == 4
    assert dump["popularity"] == {"a": 2, "b": 2}


def test_a_duplicate_of_a_late_event_counts_once(stack: StackInfo) -> None:
    state = StateSettings(popularity_half_life_s=0, reorder_window=2, dedupe_events=8,
                          allowed_lateness_s=1)
    newer = _events(("u", "a", "view", 5000), ("u", "b", "view", 6000))
    late = [Positioned("ev", 0, 10, Event("late-1", "u", "z", "view", 1000))]
    republished = [Positioned("ev", 0, 11, late[0].event)]
    (_, first, again), dump = _run(stack, state, newer, late, republished)
    assert first.late == 1 and (again.applied, again.duplicates) == (0, 1)
    assert dump["popularity"]["z"] == 1


def test_dedupe_memory_is_per_user_not_per_event(stack: StackInfo) -> None:
    """No key per event: 2,000 events of 20 users leave 20 user hashes whose remembered
    ids stop growing at D - W per user."""
    state = StateSettings(popularity_half_life_s=0, reorder_window=10, dedupe_events=40)

    async def go() -> tuple[int, list[int]]:
        redis = Redis.from_url(stack.redis_url)
        prefix = f"s{uuid.uuid4().hex[:6]}:"
        keys = Keys(prefix)
        store = RedisStateStore(redis, ApplyConfig.from_settings(prefix, "g", state))
        events = [Positioned("ev", 0, n, Event(f"e{n}", f"u{n % 20}", f"i{n % 7}", "view", n))
                  for n in range(2000)]
        for k in range(0, 2000, 250):
            await store.apply(events[k:k + 250])
        n_keys = len([key async for key in redis.scan_iter(match=f"{prefix}*")])
        sizes = [len(await redis.hget(keys.user(f"u{n}"), "ids") or b"") for n in range(20)]
        await redis.aclose()
        return n_keys, sizes

    n_keys, sizes = asyncio.run(go())
    assert sizes == [8 * (40 - 10)] * 20
    assert n_keys < 20 + 7 + 10  # user hashes, Markov rows and a few shared keys


def test_an_inactive_user_expires_but_popularity_stays(stack: StackInfo) -> None:
    state = StateSettings(popularity_half_life_s=0, user_ttl_s=1)

    async def go() -> tuple[bool, bool, float | None]:
        redis = Redis.from_url(stack.redis_url)
        prefix = f"s{uuid.uuid4().hex[:6]}:"
        keys = Keys(prefix)
        store = RedisStateStore(redis, ApplyConfig.from_settings(prefix, "g", state))
        await store.apply(_events(("u", "a", "view", 1), ("u", "b", "purchase", 2)))
        alive = bool(await redis.exists(keys.user("u"))) and \
            bool(await redis.exists(keys.bought("u")))
        await asyncio.sleep(2.2)
        gone = not await redis.exists(keys.user("u"), keys.bought("u"))
        pop = await redis.zscore(keys.popularity, "1")
        await redis.aclose()
        return alive, gone, pop

    alive, gone, pop = asyncio.run(go())
    assert alive and gone
    assert pop == 4.0  # the purchase's weight: shared aggregates do not expire


def test_late_event_counts_popularity_but_not_sequence(stack: StackInfo) -> None:
    hour = 3_600_000
    batch = _events(("u", "a", "view", 10 * hour), ("u", "b", "purchase", 8 * hour))
    (result,), dump = _run(stack, StateSettings(popularity_half_life_s=0,
                                                allowed_lateness_s=3600), batch)
    assert result.late == 1
    assert dump["users"]["u"]["sequence"] == ["a"]
    assert dump["users"]["u"]["bought"] == ["b"]
    assert dump["popularity"] == {"a": 1, "b": 4}
    assert dump["popularity_at_ts"] == 10 * hour
    assert dump["users"]["u"]["last_ts"] == 10 * hour
    assert dump["markov"] == {}


def test_markov_rows_keep_exact_counts_in_any_order(stack: StackInfo) -> None:
    spec = []
    for n, succ in enumerate(["x", "y", "y", "z", "z", "z"]):
        spec += [(f"u{n}", "a", "view", 1), (f"u{n}", succ, "view", 2)]
    forward = _events(*spec)
    pairs = [forward[i:i + 2] for i in range(0, len(forward), 2)]
    backward = [Positioned("ev", 0, n, p.event)
                for n, p in enumerate(x for pair in reversed(pairs) for x in pair)]
    (_,), one = _run(stack, StateSettings(popularity_half_life_s=0), forward)
    (_,), two = _run(stack, StateSettings(popularity_half_life_s=0), backward)
    assert one["markov"]["a"] == {"total": 6, "next": {"x": 1, "y": 2, "z": 3}}
    assert one["markov"] == two["markov"]


def test_decayed_popularity_is_identical_in_any_order(stack: StackInfo) -> None:
    day = 86_400_000
    spec = [(f"u{n % 7}", f"i{n % 5}", ("view", "click", "purchase")[n % 3], n * day // 3)
            for n in range(60)]
    forward = _events(*spec)
    backward = [Positioned("ev", 0, n, p.event) for n, p in enumerate(reversed(forward))]
    state = StateSettings(popularity_half_life_s=86_400, allowed_lateness_s=-1)
    (_,), one = _run(stack, state, forward)
    (_,), two = _run(stack, state, backward)
    assert one["popularity"] == two["popularity"]
    # item i4 at the last step (day 19): terms w * 2^(floor(ts/day) - 19)
    expected = sum({0: 1, 1: 2, 2: 4}[n % 3] * 2.0 ** ((n * day // 3) // day - 19)
                   for n in range(60) if n % 5 == 4)
    assert one["popularity"]["i4"] == pytest.approx(expected, rel=1e-12)


def test_a_reset_log_is_applied_although_its_offsets_are_below_the_watermark(
        stack: StackInfo) -> None:
    """A broker that lost its data restarts offsets at 0: new events are not redeliveries."""
    before = _events(*[("u", f"i{n}", "view", n) for n in range(5)])
    after = [Positioned("ev", 0, n, Event(f"new-{n}", "v", f"j{n}", "view", 100 + n))
             for n in range(3)]
    (_, again, reset), dump = _run(stack, StateSettings(popularity_half_life_s=0),
                                   before, before, after)
    assert (again.applied, again.below_watermark) == (0, 5)
    assert (reset.applied, reset.below_watermark) == (3, 0)
    assert dump["users"]["v"]["sequence"] == ["j0", "j1", "j2"]


def test_a_state_behind_what_was_applied_is_refused_untouched(stack: StackInfo) -> None:
    """The worker applied up to offset 1 of partition ev/0; a state whose watermark is
    still 0 lost writes (a Redis crash): nothing is applied and the watermark it has is
    reported, so the worker reads the partition again from offset 1."""
    state = StateSettings(popularity_half_life_s=0)
    first = _events(("u", "a", "view", 1))
    later = [Positioned("ev", 0, 2, Event("id-2", "u", "c", "view", 3))]

    async def go() -> tuple[StateRegressed, dict[str, Any]]:
        redis = Redis.from_url(stack.redis_url)
        prefix = f"s{uuid.uuid4().hex[:6]}:"
        store = RedisStateStore(redis, ApplyConfig.from_settings(prefix, "g", state))
        await store.apply(first, {("ev", 0): Progress(-1, 0)})
        with pytest.raises(StateRegressed) as lost:
            await store.apply(later, {("ev", 0): Progress(1, 2)})
        dump = await collect_state(redis, Keys(prefix), 0)
        await redis.aclose()
        return lost.value, dump

    lost, dump = asyncio.run(go())
    assert lost.watermarks == {("ev", 0): 0}
    assert dump["items"] == ["a"] and dump["users"]["u"]["events"] == 1


def test_progress_moves_the_watermark_past_records_without_events(stack: StackInfo) -> None:
    """Offsets 1-4 were invalid (dead-lettered): the watermark still reaches 4, so a
    redelivery of offset 3 is skipped and the next check expects 4."""
    state = StateSettings(popularity_half_life_s=0, dedupe_events=0)
    first = _events(("u", "a", "view", 1))
    again = [Positioned("ev", 0, 3, Event("id-3", "u", "b", "view", 2))]
    (one, two), dump = _run_with_progress(stack, state, (first, {("ev", 0): Progress(-1, 4)}),
                                          (again, {("ev", 0): Progress(4, 4)}))
    assert (one.applied, two.applied, two.below_watermark) == (1, 0, 1)
    assert dump["items"] == ["a"]


def _run_with_progress(stack: StackInfo, state: StateSettings, *steps: Any) -> Any:
    async def go() -> Any:
        redis = Redis.from_url(stack.redis_url)
        prefix = f"s{uuid.uuid4().hex[:6]}:"
        store = RedisStateStore(redis, ApplyConfig.from_settings(prefix, "g", state))
        results = [await store.apply(batch, progress) for batch, progress in steps]
        dump = await collect_state(redis, Keys(prefix), state.popularity_half_life_s)
        await redis.aclose()
        return results, dump

    return asyncio.run(go())


def test_lateness_is_strictly_more_than_the_allowed(stack: StackInfo) -> None:
    """Exactly the allowed lateness behind the user's newest event is on time; one
    millisecond more is late."""
    hour = 3_600_000
    batch = _events(("u", "a", "view", 10 * hour), ("u", "b", "view", 9 * hour),
                    ("u", "c", "view", 9 * hour - 1))
    (result,), dump = _run(stack, StateSettings(popularity_half_life_s=0,
                                                allowed_lateness_s=3600), batch)
    assert result.late == 1
    assert dump["users"]["u"]["sequence"] == ["b", "a"]


def test_sequences_keep_exactly_the_last_l_items_appended_or_inserted(
        stack: StackInfo) -> None:
    state = StateSettings(popularity_half_life_s=0, allowed_lateness_s=-1, sequence_length=3)
    appended = _events(*[("u", item, "view", 10 * ts) for ts, item in enumerate("abcde", 1)])
    inserted = [Positioned("ev", 1, 0, Event("late-x", "u", "x", "view", 35))]
    (_, _), dump = _run(stack, state, appended, inserted)
    assert dump["users"]["u"]["sequence"] == ["x", "d", "e"]


def test_the_watermark_is_the_partitions_own_key(stack: StackInfo) -> None:
    """`sr:wm:{group}:{topic}:{partition}` holds the last offset applied (what the worker
    resets when a broker lost its topics)."""
    async def go() -> tuple[bytes | None, bytes | None]:
        redis = Redis.from_url(stack.redis_url)
        prefix = f"s{uuid.uuid4().hex[:6]}:"
        store = RedisStateStore(redis, ApplyConfig.from_settings(prefix, "g", StateSettings()))
        await store.apply([Positioned("ev", 3, 7, Event("w-1", "u", "a", "view", 1)),
                           Positioned("ot", 0, 2, Event("w-2", "u", "b", "view", 2))])
        keys = Keys(prefix)
        values = await redis.get(keys.watermark("g", "ev", 3)), \
            await redis.get(keys.watermark("g", "ot", 0))
        await redis.aclose()
        return values

    assert asyncio.run(go()) == (b"7", b"2")


def test_zero_lateness_makes_every_older_event_late(stack: StackInfo) -> None:
    batch = _events(("u", "a", "view", 10), ("u", "b", "view", 10), ("u", "c", "view", 9))
    (result,), dump = _run(stack, StateSettings(popularity_half_life_s=0,
                                                allowed_lateness_s=0), batch)
    assert result.late == 1
    assert sorted(dump["users"]["u"]["sequence"]) == ["a", "b"]


def test_a_plain_bought_set_of_an_older_version_is_kept_and_bounded(stack: StackInfo) -> None:
    """Bought sets written as plain sets (before they were bounded) are read as they are,
    and converted, their items kept, at the user's next purchase."""
    async def go() -> tuple[list[Any], dict[str, Any]]:
        redis = Redis.from_url(stack.redis_url)
        prefix = f"s{uuid.uuid4().hex[:6]}:"
        keys = Keys(prefix)
        state = StateSettings(popularity_half_life_s=0, bought_kept=3)
        store = RedisStateStore(redis, ApplyConfig.from_settings(prefix, "g", state))
        await store.apply(_events(("u", "a", "view", 1), ("u", "b", "view", 2)))
        await redis.delete(keys.bought("u"))
        await redis.sadd(keys.bought("u"), "0", "1")  # type: ignore[misc]  # a and b
        before = (await collect_state(redis, keys, 0))["users"]["u"]["bought"]
        later = [Positioned("ev", 0, 5 + n, Event(f"later-{n}", "u", item, "purchase", ts))
                 for n, (item, ts) in enumerate((("c", 10), ("d", 11)))]
        await store.apply(later)
        after = await collect_state(redis, keys, 0)
        kind = await redis.type(keys.bought("u"))
        await redis.aclose()
        return [before, kind], after

    (before, kind), after = asyncio.run(go())
    assert before == ["a", "b"]
    assert kind == b"zset"
    assert after["users"]["u"]["bought"] == ["b", "c", "d"]  # a (time 0) trimmed to keep 3
