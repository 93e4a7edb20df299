"""The trainer against a real Redis and broker: a round publishes a model trained on the
live sequences and announces it on ``streamrec.model-updates``; a round whose model is
worse on the holdout than the current one is rejected, announces nothing, and the current
version stays."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from recmodels.datasets import synthetic_stream
from recmodels.training import train
from streamrec.app import trainer as trainer_module
from streamrec.contracts.event import Event
from streamrec.kernel.settings import Settings
from streamrec.state.keys import Keys
from streamrec.state.model_store import ModelStore
from streamrec.state.store import ApplyConfig, Positioned, RedisStateStore
from tests.conftest import StackInfo, TopicReader

pytestmark = pytest.mark.integration


def _settings(stack: StackInfo) -> Settings:
    tag = uuid.uuid4().hex[:6]
    return Settings.model_validate({
        "kafka": {"bootstrap": stack.bootstrap},
        "topics": {"model_updates": f"model-updates-{tag}"},
        "redis": {"url": stack.redis_url, "prefix": f"tr{tag}:"},
        "trainer": {"time_budget_s": 15, "fit_blend": False, "min_users": 20, "threads": 1}})


async def _fill(settings: Settings) -> None:
    redis = Redis.from_url(settings.redis.url)
    store = RedisStateStore(redis, ApplyConfig.from_settings(settings.redis.prefix, "g",
                                                              settings.state))
    events = [Positioned("ev", 0, n, Event(e.event_id, e.user_id, e.item_id, e.type, e.ts))
              for n, e in enumerate(synthetic_stream(6000, n_users=200, n_items=80, seed=3))]
    for k in range(0, len(events), 500):
        await store.apply(events[k:k + 500])
    await redis.aclose()


async def _current(settings: Settings) -> str | None:
    redis = Redis.from_url(settings.redis.url)
    try:
        return await ModelStore(redis, Keys(settings.redis.prefix)).current_version()
    finally:
        await redis.aclose()


def test_a_worse_model_is_rejected_and_the_current_one_stays(
        stack: StackInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(stack)
    asyncio.run(_fill(settings))
    first = asyncio.run(trainer_module.Trainer(settings).run_once())
    assert first.outcome == "published", first
    assert asyncio.run(_current(settings)) == first.version

    def untrained(split: Any, config: Any, **_: Any) -> Any:  # a fresh, untrained model
        return train(split, config, time_budget_s=0.0)

    monkeypatch.setattr(trainer_module, "train", untrained)
    second = asyncio.run(trainer_module.Trainer(settings).run_once())
    assert second.outcome == "rejected", second
    assert second.current is not None
    assert second.new["ndcg@10"] < second.current["ndcg@10"] - settings.trainer.tolerance
    assert asyncio.run(_current(settings)) == first.version
    reader = TopicReader(stack.bootstrap, settings.topics.model_updates)
    try:
        reader.poll_until(lambda found: len(found) >= 1, timeout=10)
        reader.poll_until(lambda found: len(found) >= 2, timeout=2)  # nothing more comes
        announced = reader.values()
    finally:
        reader.close()
    assert [a["version"] for a in announced] == [first.version]  # the rejected one: none
    assert reader.messages[0].key == first.version.encode()
    assert announced[0]["metrics"]["ndcg@10"] == first.new["ndcg@10"]
    assert 0 < announced[0]["items"] <= 80 and announced[0]["published_at"] > 0
