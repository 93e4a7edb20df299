"""Published model versions in Redis: per version its weights (safetensors bytes,
:meth:`Keys.model_weights`) and its metadata (JSON: config, items, metrics, and the blend
fitted on the trainer's holdout when there is one, :meth:`Keys.model_meta`), and the
current version (:attr:`Keys.model_current`).

The trainer writes a version's blobs first and flips ``current`` with one SET, so a reader
sees either the old version or the complete new one. Weights are safetensors: loading
never unpickles.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from recmodels.checkpoint import Checkpoint
from recmodels.sasrec import SASRecConfig
from recmodels.scoring.ranking import BlendWeights
from recmodels.split import ItemVocab
from streamrec.kernel.errors import StreamrecError
from streamrec.state.keys import Keys

log = logging.getLogger(__name__)


class ModelStoreError(StreamrecError):
    """A published model version is missing or unreadable (names the key)."""


@dataclass(frozen=True)
class PublishedModel:
    version: str
    checkpoint: Checkpoint
    created_at_ms: int
    metrics: dict[str, float]
    blend: BlendWeights | None = None  # fitted on the trainer's holdout


def to_blobs(checkpoint: Checkpoint, version: str, metrics: dict[str, float],
             created_at_ms: int, blend: dict[str, Any] | None = None) -> tuple[bytes, bytes]:
    tensors = {k: v.detach().cpu().contiguous() for k, v in checkpoint.state_dict.items()}
    meta = {"version": version, "model": "sasrec", "config": checkpoint.config.to_dict(),
            "items": list(checkpoint.vocab.items), "created_at_ms": created_at_ms,
            "metrics": metrics, "history": checkpoint.history, "meta": checkpoint.meta}
    if blend is not None:
        meta["blend"] = blend
    return st_save(tensors), json.dumps(meta).encode()


def from_blobs(weights: bytes, meta_raw: bytes, where: str) -> PublishedModel:
    try:
        meta = json.loads(meta_raw)
        config = SASRecConfig.from_dict(meta["config"])
        vocab = ItemVocab(meta["items"])
        state = st_load(weights)
        blend = BlendWeights.from_meta(meta.get("blend"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelStoreError(f"{where}: unreadable model version: {exc}") from None
    checkpoint = Checkpoint(config, vocab, state, list(meta.get("history", [])),
                            dict(meta.get("meta", {})))
    return PublishedModel(str(meta["version"]), checkpoint, int(meta["created_at_ms"]),
                          {k: float(v) for k, v in meta.get("metrics", {}).items()}, blend)


class ModelStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def current_version(self) -> str | None:
        raw = await self._redis.get(self._keys.model_current)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def next_version(self) -> str:
        n = await self._redis.incr(self._keys.model_seq)
        return f"sasrec-{int(n):04d}"

    async def load(self, version: str) -> PublishedModel:
        meta_key = self._keys.model_meta(version)
        found: list[Any] = await self._redis.mget(self._keys.model_weights(version), meta_key)
        weights, meta = found
        if weights is None or meta is None:
            raise ModelStoreError(f"{meta_key}: model version {version!r} is not in Redis")
        return from_blobs(weights, meta, meta_key)

    async def load_current(self) -> PublishedModel | None:
        version = await self.current_version()
        return await self.load(version) if version else None

    async def publish(self, checkpoint: Checkpoint, metrics: dict[str, float],
                      keep: int = 3, blend: dict[str, Any] | None = None) -> str:
        """Write a new version, flip ``current`` to it, drop versions older than ``keep``.
        ``blend``: the fitted blend (:meth:`BlendWeights.to_meta`), when there is one."""
        keys = self._keys
        version = await self.next_version()
        weights, meta = to_blobs(checkpoint, version, metrics, int(time.time() * 1000), blend)
        await self._redis.mset({keys.model_weights(version): weights,
                                keys.model_meta(version): meta})
        await self._redis.set(keys.model_current, version)
        await self._redis.rpush(keys.model_versions, version)
        old: list[Any] = await self._redis.lrange(keys.model_versions, 0, -keep - 1)
        for stale in old:
            name = stale.decode()
            await self._redis.delete(keys.model_weights(name), keys.model_meta(name))
        if old:
            await self._redis.ltrim(keys.model_versions, len(old), -1)
        log.info("model published version=%s items=%d metrics=%s", version,
                 checkpoint.vocab.n_items, metrics)
        return version
