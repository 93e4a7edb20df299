"""Key names, scan patterns and what a scanned key names (streamrec.state.keys)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from streamrec.state.keys import Keys

KEYS = Keys("t:")


def test_a_user_hash_names_its_user_and_a_bought_set_none() -> None:
    assert KEYS.user_of(KEYS.user("alice")) == "alice"
    assert KEYS.user_of(KEYS.user("a:b")) == "a:b"
    assert KEYS.user_of(KEYS.bought("alice")) is None
    assert KEYS.user_of(KEYS.served("alice")) is None
    assert KEYS.user_of(Keys("other:").user("alice")) is None
    assert KEYS.is_bought(KEYS.bought("alice")) and not KEYS.is_bought(KEYS.user("alice"))
    assert not Keys("other:").is_bought(KEYS.bought("alice"))


def test_a_markov_row_names_its_item_and_the_totals_none() -> None:
    assert KEYS.markov_row_of(KEYS.markov_row(7)) == 7
    assert KEYS.markov_row_of(KEYS.markov_totals) is None
    assert KEYS.markov_row_of(KEYS.markov_row(7) + "x") is None
    assert KEYS.markov_row_of(KEYS.user("7")) is None


def test_each_pattern_matches_its_keys_only() -> None:
    cases = [
        (KEYS.user_pattern, [KEYS.user("u"), KEYS.bought("u")], [KEYS.served("u")]),
        (KEYS.bought_pattern, [KEYS.bought("u")], [KEYS.user("u")]),
        (KEYS.markov_pattern, [KEYS.markov_row(3), KEYS.markov_totals], [KEYS.popularity]),
        (KEYS.served_pattern, [KEYS.served("u")], [KEYS.user("u")]),
        (KEYS.all_pattern, [KEYS.user("u"), KEYS.stats], [Keys("other:").user("u")]),
        (KEYS.watermark_pattern("g", "events.view"),
         [KEYS.watermark("g", "events.view", 0), KEYS.watermark("g", "events.view", 12)],
         [KEYS.watermark("g", "events.click", 0), KEYS.watermark("h", "events.view", 0)]),
    ]
    for pattern, matching, others in cases:
        assert all(fnmatchcase(key, pattern) for key in matching), pattern
        assert not any(fnmatchcase(key, pattern) for key in others), pattern


def test_every_key_starts_with_the_prefix_and_model_keys_differ() -> None:
    names = [KEYS.item_index, KEYS.item_ids, KEYS.markov_totals, KEYS.popularity,
             KEYS.popularity_meta, KEYS.stats, KEYS.blocked, KEYS.model_current,
             KEYS.model_seq, KEYS.model_versions, KEYS.model_meta("v1"),
             KEYS.model_weights("v1"), KEYS.scratch("u")]
    assert all(name.startswith("t:") for name in names)
    assert len(set(names)) == len(names)
    assert len(KEYS.scratch("alice")) == len(KEYS.user("alice"))
