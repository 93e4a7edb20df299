"""The trainer publishes a version from the live sequences; the running worker swaps it in
within seconds (its version shows in the messages), and the Redis state equals that of a
run without the swap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import orjson
import pytest
from redis.asyncio import Redis

from recmodels.datasets import synthetic_stream
from recmodels.online import encoder_dtype
from streamrec.kernel.settings import Settings
from streamrec.state.keys import Keys
from streamrec.state.model_holder import online_model
from streamrec.state.model_store import ModelStore
from streamrec.state.reader import decode_sequence
from streams.producer import publish
from tests.conftest import Pipeline, TopicReader, kafka_producer, state_of, wait_applied

pytestmark = pytest.mark.e2e

# the product's mix on the three typed topics: the state does not depend on how the
# worker interleaves them, so both runs end with the same state
EVENTS = list(synthetic_stream(4000, n_users=150, n_items=120, seed=5))
FIRST, SECOND = EVENTS[:3000], EVENTS[3000:]


async def _stored_and_expected(settings: Settings, user: str,
                               version: str) -> tuple[bytes, bytes, np.ndarray]:
    """The user's stored vector and its version, and what ``version`` makes of the user's
    stored sequence (in the worker's encoder precision)."""
    redis = Redis.from_url(settings.redis.url)
    keys = Keys(settings.redis.prefix)
    try:
        emb, ver, seq = await redis.hmget(keys.user(user), "emb", "ver", "seq")
        model = online_model(await ModelStore(redis, keys).load(version),
                                           encoder_dtype(settings.worker.encoder_precision))
    finally:
        await redis.aclose()
    return emb or b"", ver or b"", model.user_vectors([decode_sequence(seq or b"")])[0]


def test_trainer_publishes_and_workers_swap_without_changing_state(
        make_pipeline: Callable[..., Pipeline]) -> None:
    swapped, plain = make_pipeline(), make_pipeline()
    for p in (swapped, plain):
        p.start_worker()
        asyncio.run(publish(p.settings, FIRST, len(FIRST)))
    wait_applied(swapped.settings, len(FIRST))

    result = swapped.cli("trainer", "--once", "--time-budget", "20", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "published version=sasrec-0001" in result.stdout
    published_at = time.monotonic()

    # a new event after the swap: its list comes from the new version, within 10 s
    reader = TopicReader(swapped.settings.kafka.bootstrap, swapped.settings.topics.recommendations)
    producer = kafka_producer(swapped.settings.kafka.bootstrap)
    version = None
    while time.monotonic() - published_at < 10 and version != "sasrec-0001":
        user = f"probe-{time.monotonic_ns()}"
        producer.send(swapped.settings.topics.view, key=user.encode(), value=orjson.dumps(
            {"user_id": user, "item_id": "item-3", "type": "view", "ts": EVENTS[0].ts}))
        producer.flush()
        got = reader.poll_until(lambda ms, u=user: any(
            orjson.loads(m.value)["user_id"] == u for m in ms), 5)
        version = next(orjson.loads(m.value)["model_version"] for m in got
                       if orjson.loads(m.value)["user_id"] == user)
    assert version == "sasrec-0001"
    assert time.monotonic() - published_at < 10
    # the vector that served the list is stored with it, made by that version from the
    # user's sequence (role all writes it with the served list)
    emb, ver, expected = asyncio.run(_stored_and_expected(swapped.settings, user,
                                                          "sasrec-0001"))
    assert ver == b"sasrec-0001"
    np.testing.assert_allclose(np.frombuffer(emb, dtype="<f4"), expected, rtol=1e-4,
                               atol=1e-5)
    reader.close()
    producer.close()

    for p in (swapped, plain):
        asyncio.run(publish(p.settings, SECOND, len(SECOND)))
    wait_applied(plain.settings, len(EVENTS))
    wait_applied(swapped.settings, len(EVENTS) + 1)  # + the probe(s)
    one, two = state_of(swapped.settings), state_of(plain.settings)
    probes = {u for u in one["users"] if u.startswith("probe-")}
    assert probes
    for u in probes:
        del one["users"][u]
    # the probes viewed item-3: remove their popularity share before comparing
    one["popularity"].pop("item-3"), two["popularity"].pop("item-3")
    assert one == two
