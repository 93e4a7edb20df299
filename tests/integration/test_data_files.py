"""Your own files through ``streamrec produce``: for each preset, every valid row becomes
one event on its type's topic (keyed by user, with its own stable id) and every bad row is
reported with its line; publishing the same file again gives the same event ids."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from tests.conftest import Pipeline, TopicReader
from tests.unit.test_adapters import FIXTURES, LAYOUTS, TYPES

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("preset", sorted(FIXTURES))
def test_each_preset_publishes_every_valid_row_once_and_reports_the_bad_ones(
        make_pipeline: Callable[..., Pipeline], preset: str) -> None:
    pipeline = make_pipeline()
    name, bad_rows = FIXTURES[preset]
    done = pipeline.cli("produce", str(LAYOUTS / name), "--preset", preset, "--quiet")
    assert done.returncode == 0, done.stderr
    assert "published 320 events" in done.stdout
    assert f"{len(bad_rows)} bad row(s) not published" in done.stderr
    for where in bad_rows:
        assert (where if isinstance(where, str) else f"line {where}") + ":" in done.stderr
    topics = pipeline.settings.topics
    expected = TYPES if preset != "recbole" else Counter(view=320)
    ids: set[str] = set()
    for kind, topic in (("view", topics.view), ("click", topics.click),
                        ("purchase", topics.purchase)):
        if not expected[kind]:
            continue
        reader = TopicReader(pipeline.settings.kafka.bootstrap, topic)
        try:
            got = reader.poll_until(lambda m, n=expected[kind]: len(m) >= n, timeout=30)
        finally:
            reader.close()
        assert len(got) == expected[kind]
        values = reader.values()
        assert {v["type"] for v in values} == {kind}
        assert all(m.key.decode() == v["user_id"] for m, v in zip(got, values, strict=True))
        ids |= {v["event_id"] for v in values}
    assert len(ids) == 320
    assert all(i.startswith(name + ":") for i in ids), "stable ids from file and line"


def test_a_file_option_that_does_not_fit_its_format_is_refused(
        make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline()
    done = pipeline.cli("produce", str(LAYOUTS / "ecommerce.csv"), "--format", "ml100k",
                        "--columns", "user=user_id")
    assert done.returncode != 0
    assert "--format ml100k has a fixed layout" in done.stderr
    assert "Traceback" not in done.stderr
    done = pipeline.cli("produce", str(LAYOUTS / "ecommerce.csv"), "--format", "csv")
    assert done.returncode != 0
    assert "no column 'item_id' for item" in done.stderr
