"""Role all: serving uses the state read the state step started, unless it failed or is of
other users (then it reads again)."""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError

from recmodels.scoring.batch_scoring import MarkovColumns
from recmodels.scoring.ranking import UserState
from serving.recommender import _ready
from streamrec.state.reader import Snapshot


def _snapshot(*user_ids: str) -> Snapshot:
    return Snapshot(n_items=3, popular=[(0, 1.0)], blocked=frozenset(),
                    users=[UserState(u, [1]) for u in user_ids], markov=MarkovColumns.empty())


def _settled(result: Snapshot | Exception) -> Snapshot | None:
    async def run() -> Snapshot | None:
        future: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
        return await _ready(future, ["u1", "u2"])
    return asyncio.run(run())


def test_the_snapshot_read_ahead_is_used_for_the_same_users() -> None:
    snap = _snapshot("u1", "u2")
    assert _settled(snap) is snap


def test_a_failed_read_ahead_or_one_of_other_users_is_read_again() -> None:
    assert _settled(RedisConnectionError("Redis away")) is None
    assert _settled(_snapshot("u2", "u1")) is None  # the order of the lists differs
    assert _settled(_snapshot("u1")) is None


def test_a_read_ahead_that_cannot_be_sent_leaves_serving_to_read() -> None:
    from streams.pipeline import EventPath, _read_ahead

    async def refuse(user_ids: list[str]) -> asyncio.Future[Snapshot]:
        raise RedisConnectionError("Redis away")

    async def send(user_ids: list[str]) -> asyncio.Future[Snapshot]:
        future: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()
        future.set_result(_snapshot(*user_ids))
        return future

    def path(read_ahead: object) -> EventPath:
        return EventPath(type_by_topic={}, store=None, outbox=None, dlq_topic="",  # type: ignore[arg-type]
                         announce=None, read_ahead=read_ahead)  # type: ignore[arg-type]

    async def run() -> tuple[object, object, object]:
        sent = await _read_ahead(path(send), ["u1"])
        return (await _read_ahead(path(refuse), ["u1"]), await _read_ahead(path(None), ["u1"]),
                await sent if sent is not None else None)

    refused, absent, sent = asyncio.run(run())
    assert refused is None and absent is None
    assert isinstance(sent, Snapshot) and [u.user_id for u in sent.users] == ["u1"]
