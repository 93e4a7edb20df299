"""Turns user updates into recommendation messages: read state, score, blend, filter, rank."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from recmodels.online import ModelHolder, OnlineModel
from serving.catalog import ItemCatalog
from serving.coverage import CoverageWindow
from serving.diversity import mmr
from serving.message import recommendation
from serving.ranking import (
    BlendWeights,
    Scored,
    UserState,
    blend,
    exclusions,
    markov_scores,
    sequence_scores,
    top_n,
)
from serving.state_reader import ServingStateReader
from streamrec import metrics
from streamrec.settings import ServingSettings
from streams.user_updates import UserUpdate

MARKOV_VERSION = "markov"


def _user_vectors(users: Sequence[UserState], model: OnlineModel) -> list[np.ndarray]:
    """Stored vectors made by this model version; the others recomputed from sequences."""
    stale = [u for u in users if u.vector is None or u.vector_version != model.version]
    fresh = dict(zip((u.user_id for u in stale),
                     model.user_vectors([u.sequence for u in stale]), strict=True))
    out: list[np.ndarray] = []
    for u in users:
        vector = fresh.get(u.user_id, u.vector)
        assert vector is not None
        out.append(vector)
    return out


class Recommender:
    def __init__(self, reader: ServingStateReader, catalog: ItemCatalog,
                 settings: ServingSettings, clock_ms: Callable[[], int],
                 models: ModelHolder | None = None) -> None:
        self._reader = reader
        self._catalog = catalog
        self._settings = settings
        self._clock_ms = clock_ms
        self._models = models
        self._weights = BlendWeights(settings.weight_markov, settings.weight_sequence,
                                     settings.weight_trending)
        self.coverage = CoverageWindow(settings.coverage_window_s)

    async def recommend(self, updates: Sequence[UserUpdate], n: int | None = None,
                        remember: bool = True) -> list[dict[str, Any]]:
        """One v1 message per distinct user, for the latest update of each. ``remember``
        stores the served lists (for the online hit rate); pull requests do not."""
        latest: dict[str, UserUpdate] = {}
        for update in updates:
            latest[update.user_id] = update
        if not latest:
            return []
        cfg = self._settings
        snap = await self._reader.read(list(latest))
        model = self._models.current if self._models is not None else None
        use_sequence = model is not None and self._weights.sequence > 0
        vectors = _user_vectors(snap.users, model) if use_sequence and model else None
        trending = snap.popular[:cfg.trending_candidates]
        ranked: list[tuple[str, list[Scored]]] = []
        for row, user in enumerate(snap.users):
            exclude = exclusions(user, cfg.exclude_recent, cfg.exclude_purchased, snap.blocked)
            markov = markov_scores(user.rows, snap.n_items, cfg.markov_smoothing,
                                   cfg.markov_recency_decay)
            sequence = sequence_scores(vectors[row], model.item_vectors, cfg.sequence_candidates,
                                       exclude) if model is not None and vectors else {}
            candidates = blend(markov, sequence, trending if user.sequence else [],
                               self._weights)
            size = n or cfg.top_n
            if model is not None and cfg.diversity_lambda < 1.0:
                pool = top_n(candidates, snap.popular, exclude, size * cfg.diversity_pool)
                items = mmr(pool, model.item_vectors, cfg.diversity_lambda, size)
            else:
                items = top_n(candidates, snap.popular, exclude, size)
            ranked.append((user.user_id, items))
        highest = max((max(s.item, *(r.after or 0 for r in s.reasons))
                       for _, items in ranked for s in items), default=-1)
        ids = await self._catalog.ensure(highest)
        served = {user_id: [s.item for s in items] for user_id, items in ranked}
        now = self._clock_ms()
        if remember:
            await self._reader.remember_served(served, cfg.served_ttl_s)
            for served_items in served.values():
                self.coverage.add(served_items, now / 1000)
            metrics.SERVED_COVERAGE.set(self.coverage.ratio(snap.n_items, now / 1000))
        version = model.version if model is not None else MARKOV_VERSION
        return [
            recommendation(user_id, items, ids, version, latest[user_id].event_id,
                           latest[user_id].ts, now)
            for user_id, items in ranked
        ]
