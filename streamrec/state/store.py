"""Online state updates: one atomic Redis step per batch (pure packing + the Redis edge)."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Protocol

from redis.asyncio import Redis

from streamrec.contracts.event import Event
from streamrec.kernel.errors import StreamrecError
from streamrec.kernel.settings import StateSettings


@dataclass(frozen=True, slots=True)
class Positioned:
    """A normalised event with its coordinates on its input topic (events.view,
    events.click or events.purchase): the topic, partition and offset it was read at."""

    topic: str
    partition: int
    offset: int
    event: Event


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int
    below_watermark: int
    duplicates: int
    late: int
    online_hits: int = 0
    online_evaluations: int = 0
    sequences: dict[str, bytes] = field(default_factory=dict)  # users changed -> packed seq
    erased: int = 0  # events of forgotten users from before their erasure, skipped
    corrupted: int = 0  # user hashes found corrupted and started anew


@dataclass(frozen=True, slots=True)
class ApplyConfig:
    prefix: str
    sequence_length: int
    reorder_window: int
    half_life_ms: int
    dedupe_events: int
    allowed_lateness_ms: int
    group: str
    weights: tuple[str, str, str]  # weights of view, click, purchase, as the script reads them
    user_ttl_s: int = 0
    bought_kept: int = 0  # 0: all

    @classmethod
    def from_settings(cls, prefix: str, group: str, state: StateSettings) -> ApplyConfig:
        return cls(
            prefix=prefix,
            sequence_length=state.sequence_length,
            reorder_window=state.reorder_window,
            half_life_ms=int(state.popularity_half_life_s * 1000),
            dedupe_events=state.dedupe_events,
            allowed_lateness_ms=int(state.allowed_lateness_s * 1000)
            if state.allowed_lateness_s >= 0 else -1,
            group=group,
            weights=(repr(state.weights.view), repr(state.weights.click),
                     repr(state.weights.purchase)),
            user_ttl_s=int(state.user_ttl_s),
            bought_kept=state.bought_kept,
        )


HEADER_ARGS = 13  # ARGV before the partitions (see apply_batch.lua)
FIELD, RECORD = "\x1f", "\x1e"  # ids never hold control characters (streamrec.contracts.event)
TYPE_RANK: dict[str, int] = {"view": 0, "click": 1, "purchase": 2}


def tie_break(event_id: str) -> int:
    """Last part of the total order of a user's events, after the timestamp and the type
    rank (view < click < purchase): the CRC-32 of the event id."""
    return zlib.crc32(event_id.encode())


def id_hash(event_id: str) -> int:
    """The second 32 bits of an event id's hash (with :func:`tie_break`, the 64 bits by
    which the state step finds a duplicate among a user's last events)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=4).digest(), "little")


@dataclass(frozen=True, slots=True)
class Progress:
    """What the worker knows of one input partition around a state step: every offset up
    to ``expected`` was applied (or skipped) before, and every offset up to ``reached`` is
    once this step is applied (-1: nothing known)."""

    expected: int
    reached: int


class StateRegressed(StreamrecError):
    """The state lost applied writes (a Redis crash with writes not yet on disk): its
    watermarks, per partition, are below what this worker applied. Nothing was applied;
    those partitions must be read again from ``watermarks[p] + 1``."""

    def __init__(self, watermarks: dict[tuple[str, int], int]) -> None:
        super().__init__(f"state watermarks behind what was applied: {watermarks}")
        self.watermarks = watermarks


def pack_batch(batch: Iterable[Positioned], config: ApplyConfig,
               progress: Mapping[tuple[str, int], Progress] | None = None) -> list[str | int]:
    """ARGV for ``apply_batch.lua``: the partitions, then the number of events and the
    events in arrival order as one string (records split by RS, fields by US), each naming
    its partition by number (offsets increase within a partition). One argument for all
    events: the client packs a few arguments per batch instead of eight per event."""
    blocks: dict[tuple[str, int], int] = {part: n for n, part in enumerate(progress or {}, 1)}
    records: list[str] = []
    for p in batch:
        block = blocks.setdefault((p.topic, p.partition), len(blocks) + 1)
        e = p.event
        records.append(f"{block}\x1f{p.offset}\x1f{id_hash(e.event_id)}\x1f{e.user_id}\x1f"
                       f"{e.item_id}\x1f{e.type}\x1f{e.ts}\x1f{tie_break(e.event_id)}")
    args: list[str | int] = [
        config.prefix, config.sequence_length, config.reorder_window, config.half_life_ms,
        config.dedupe_events, config.allowed_lateness_ms, config.group, *config.weights,
        config.user_ttl_s, config.bought_kept, len(blocks),
    ]
    assert len(args) == HEADER_ARGS
    none = Progress(-1, -1)
    for part in blocks:
        known = progress.get(part, none) if progress else none
        args += [part[0], part[1], known.expected, known.reached]
    args += [len(records), RECORD.join(records)]
    return args


class StateStore(Protocol):
    async def apply(self, batch: Sequence[Positioned],
                    progress: Mapping[tuple[str, int], Progress] | None = None
                    ) -> ApplyResult: ...


_SCRIPT = resources.files("streamrec.state").joinpath("apply_batch.lua").read_text()


class RedisStateStore:
    """Applies batches with one EVALSHA each."""

    def __init__(self, redis: Redis, config: ApplyConfig) -> None:
        self._redis = redis
        self._config = config
        self._script = redis.register_script(_SCRIPT)

    async def apply(self, batch: Sequence[Positioned],
                    progress: Mapping[tuple[str, int], Progress] | None = None
                    ) -> ApplyResult:
        """Apply the events (and move the watermarks of ``progress``); raises
        :class:`StateRegressed` when a watermark is below its expected value."""
        if not batch and not progress:
            return ApplyResult(0, 0, 0, 0)
        args = pack_batch(batch, self._config, progress)
        out = await self._script(args=args)
        if int(out[0]) == -1:
            first = HEADER_ARGS  # ARGV index (0-based) of the first partition's topic
            raise StateRegressed({
                (str(args[first + 4 * (b - 1)]), int(args[first + 4 * (b - 1) + 1])): int(wm)
                for b, wm in zip(out[1::2], out[2::2], strict=True)})
        flat = out[6]
        sequences = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
        applied, below, dups, late, hits, evaluations = (int(x) for x in out[:6])
        return ApplyResult(applied, below, dups, late, hits, evaluations, sequences,
                           int(out[7]), int(out[8]))
