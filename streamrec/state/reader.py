"""Reads serving state for a batch of users in one Redis round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import NoScriptError

from recmodels.online import FreshVectors
from recmodels.scoring.batch_scoring import MarkovColumns
from recmodels.scoring.ranking import UserState
from streamrec.state.keys import Keys
from streamrec.state.user_writes import UserWriter

_SCRIPT = resources.files("streamrec.state").joinpath("read_state.lua").read_text()


@dataclass(frozen=True, slots=True)
class Snapshot:
    n_items: int
    popular: list[tuple[int, float]]
    blocked: frozenset[int]
    users: list[UserState]  # without Markov rows: those are in ``markov``, as columns
    markov: MarkovColumns


def _pairs(flat: Sequence[Any]) -> list[tuple[int, float]]:
    return [(int(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]


def decode_sequence(packed: bytes) -> list[int]:
    """Item indexes packed as little-endian u32 (a trailing partial index, from a
    corrupted value, is dropped)."""
    usable = len(packed) - len(packed) % 4 if packed else 0
    return np.frombuffer(packed[:usable], dtype="<u4").astype(int).tolist() if usable else []


def _vector(emb: bytes | None) -> np.ndarray | None:
    """A stored user vector; None when there is none or it is not whole float32s."""
    if not emb or len(emb) % 4:
        return None
    vector = np.frombuffer(emb, dtype="<f4")
    return vector if bool(np.isfinite(vector).all()) else None


def _indexes(values: Sequence[Any], n_items: int) -> list[int]:
    """Item indexes of the catalogue (values that are not one, from a corrupted key, are
    left out)."""
    out = []
    for value in values:
        try:
            idx = int(value)
        except (TypeError, ValueError):
            continue
        if 0 <= idx < n_items:
            out.append(idx)
    return out


def _markov_columns(per_user_items: Sequence[Sequence[int]],
                    rows: Sequence[Any]) -> MarkovColumns:
    """Each user's rows as columns. ``per_user_items``: each user's row items, most recent
    first; ``rows``: ``{items, lengths, text}``, each distinct row of the batch once (see
    read_state.lua), expanded here to one row per user that has it."""
    items, lengths, text = rows
    where = {int(item): d for d, item in enumerate(items)}
    row_user: list[int] = []
    row_rank: list[int] = []
    row_of: list[int] = []  # each user row's distinct row
    for user, user_items in enumerate(per_user_items):
        for rank, item in enumerate(user_items):
            row_user.append(user)
            row_rank.append(rank)
            row_of.append(where[int(item)])
    if not row_user:
        return MarkovColumns.empty()
    numbers = np.array(text.split(), dtype=np.float64)
    pairs = np.array(lengths, dtype=np.int64)
    sizes = 1 + 2 * pairs  # the total, then K (succ, count) pairs
    starts = np.cumsum(sizes) - sizes
    d = np.array(row_of, dtype=np.int64)
    n_succ = pairs[d]
    succ_row = np.repeat(np.arange(len(d), dtype=np.int64), n_succ)
    # position of each successor of each user row in ``numbers``
    nth = np.arange(len(succ_row), dtype=np.int64) - np.repeat(np.cumsum(n_succ) - n_succ,
                                                               n_succ)
    at = np.repeat(starts[d] + 1, n_succ) + 2 * nth
    return MarkovColumns(
        row_user=np.array(row_user, dtype=np.int64),
        row_rank=np.array(row_rank, dtype=np.int64),
        row_item=np.array(items, dtype=np.int64)[d],
        row_total=numbers[starts][d],
        succ_row=succ_row,
        succ_item=numbers[at].astype(np.int64),
        succ_count=numbers[at + 1])


def parse_snapshot(user_ids: Sequence[str], raw: Sequence[Any]) -> Snapshot:
    """Serving's read; a user's corrupted values (a sequence cut mid-index, indexes past
    the catalogue, a vector of partial floats) are read as far as they make sense."""
    n_items = int(raw[0])
    users = []
    row_items = []
    for user_id, (seq, bought, items, emb, ver) in zip(user_ids, raw[4:], strict=True):
        row_items.append(_indexes(items, n_items))
        users.append(UserState(
            user_id=user_id, sequence=_indexes(decode_sequence(seq), n_items),
            bought=frozenset(_indexes(bought, n_items)),
            vector=_vector(emb),
            vector_version=ver.decode(errors="replace") if ver else None))
    return Snapshot(n_items=n_items, popular=_pairs(raw[1]),
                    blocked=frozenset(int(b) for b in raw[2]), users=users,
                    markov=_markov_columns(row_items, raw[3]))


class ServingStateReader:
    def __init__(self, redis: Redis, keys: Keys, history: int, row_size: int,
                 popular: int) -> None:
        self._keys = keys
        self._history = history
        self._row_size = row_size
        self._popular = popular
        self._redis = redis
        self._script = redis.register_script(_SCRIPT)
        self._script_loaded = False
        self._writer = UserWriter(redis, keys)

    async def remember_served(self, lists: Mapping[str, Sequence[int]], ttl_s: int,
                              vectors: FreshVectors | None = None) -> None:
        """Store each user's served list (for the online hit rate) and, when given, user
        vectors with their model version: one round trip."""
        await self._writer.write(lists, ttl_s, vectors.by_user if vectors else {},
                                 vectors.version if vectors else "")

    def _args(self, user_ids: Sequence[str], vectors: bool) -> list[str | int]:
        return [self._keys.prefix, self._history, self._row_size, self._popular,
                "1" if vectors else "0", *user_ids]

    async def read(self, user_ids: Sequence[str], vectors: bool = True) -> Snapshot:
        """What serving needs for these users; ``vectors=False`` leaves the stored user
        vectors out (the caller has fresh ones)."""
        return parse_snapshot(user_ids, await self._script(args=self._args(user_ids, vectors)))

    async def read_ahead(self, user_ids: Sequence[str]) -> asyncio.Future[Snapshot]:
        """Send the read of these users' state (without stored vectors) and return at once:
        the future parses the reply. The request is on its way when this returns, so the
        caller's work (the user encoding) overlaps Redis running it; a task started for
        :meth:`read` would only send it at the caller's next await. The future fails when
        the read does (Redis away, the script not loaded): the caller reads again."""
        pool = self._redis.connection_pool
        if not self._script_loaded:
            await self._redis.script_load(_SCRIPT)
            self._script_loaded = True
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_command("EVALSHA", self._script.sha, 0,
                                    *self._args(user_ids, vectors=False))
        except BaseException:
            await conn.disconnect()
            await pool.release(conn)
            raise
        return asyncio.ensure_future(self._reply(conn, list(user_ids)))

    async def _reply(self, conn: Connection, user_ids: list[str]) -> Snapshot:
        try:
            raw = await conn.read_response()
        except BaseException as exc:  # a reply left unread or broken: not reused
            if isinstance(exc, NoScriptError):
                self._script_loaded = False  # Redis restarted: load it again next time
            await conn.disconnect()
            raise
        finally:
            await self._redis.connection_pool.release(conn)
        return parse_snapshot(user_ids, raw)
