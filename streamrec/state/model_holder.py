"""The model a worker uses online, and its hot swap: polls the model store for a new
version and swaps it in without pausing the event path (the load runs in a thread)."""

from __future__ import annotations

import asyncio
import logging
import time

import torch

from recmodels.online import OnlineModel
from streamrec.kernel import metrics
from streamrec.state.model_store import ModelStore, ModelStoreError, PublishedModel

log = logging.getLogger(__name__)


def online_model(published: PublishedModel,
                 encoder_dtype: torch.dtype = torch.float32) -> OnlineModel:
    return OnlineModel.from_checkpoint(
        published.checkpoint, published.version, published.created_at_ms, encoder_dtype,
        ndcg_at_10=published.metrics.get("ndcg@10"), blend=published.blend)


class ModelHolder:
    """Keeps the current model and swaps in each newly published version."""

    def __init__(self, store: ModelStore, encoder_dtype: torch.dtype = torch.float32) -> None:
        self._store = store
        self._encoder_dtype = encoder_dtype
        self.current: OnlineModel | None = None
        self._checking = asyncio.Lock()
        self._unloadable: str | None = None  # a version that failed: not retried, logged once

    @property
    def version(self) -> str | None:
        return self.current.version if self.current else None

    async def refresh(self) -> bool:
        """Load the published version when it differs from ours; True when swapped."""
        if self._checking.locked():
            return False
        async with self._checking:
            version = await self._store.current_version()
            if version is None or version in (self.version, self._unloadable):
                self._export()
                return False
            try:
                published = await self._store.load(version)
                online = await asyncio.to_thread(online_model, published,
                                                 self._encoder_dtype)
            except ModelStoreError as exc:
                self._unloadable = version
                log.error("model version %s cannot be loaded, keeping %s: %s", version,
                          self.version, exc)
                return False
            previous = self.version
            self.current = online
            self._export(previous)
            log.info("model swapped version=%s previous=%s items=%d", online.version,
                     previous, online.n_items)
            return True

    def _export(self, previous: str | None = "") -> None:
        online = self.current
        if online is None:
            return
        if previous != online.version:
            metrics.MODEL_VERSION.clear()
        metrics.MODEL_VERSION.labels(version=online.version).set(1)
        metrics.MODEL_AGE.set(max(0.0, time.time() - online.created_at_ms / 1000))
        if online.ndcg_at_10 is not None:
            metrics.MODEL_NDCG.set(online.ndcg_at_10)

