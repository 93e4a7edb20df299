"""Turns user updates into recommendation messages: read state, score, filter, rank."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from serving.catalog import ItemCatalog
from serving.coverage import CoverageWindow
from serving.message import recommendation
from serving.ranking import exclusions, markov_scores, top_n
from serving.state_reader import ServingStateReader
from streamrec import metrics
from streamrec.settings import ServingSettings
from streams.user_updates import UserUpdate

MARKOV_VERSION = "markov"


class Recommender:
    def __init__(self, reader: ServingStateReader, catalog: ItemCatalog,
                 settings: ServingSettings, clock_ms: Callable[[], int]) -> None:
        self._reader = reader
        self._catalog = catalog
        self._settings = settings
        self._clock_ms = clock_ms
        self.coverage = CoverageWindow(settings.coverage_window_s)

    async def recommend(self, updates: Sequence[UserUpdate]) -> list[dict[str, Any]]:
        """One v1 message per distinct user, for the latest update of each."""
        latest: dict[str, UserUpdate] = {}
        for update in updates:
            latest[update.user_id] = update
        if not latest:
            return []
        cfg = self._settings
        snap = await self._reader.read(list(latest))
        ranked = []
        highest = -1
        for user in snap.users:
            candidates = markov_scores(user.rows, snap.n_items, cfg.markov_smoothing,
                                       cfg.markov_recency_decay)
            exclude = exclusions(user, cfg.exclude_recent, cfg.exclude_purchased, snap.blocked)
            items = top_n(candidates, snap.popular, exclude, cfg.top_n)
            ranked.append((user.user_id, items))
            for s in items:
                highest = max(highest, s.item, *(r.after or 0 for r in s.reasons))
        ids = await self._catalog.ensure(highest)
        served = {user_id: [s.item for s in items] for user_id, items in ranked}
        await self._reader.remember_served(served, cfg.served_ttl_s)
        now = self._clock_ms()
        for served_items in served.values():
            self.coverage.add(served_items, now / 1000)
        metrics.SERVED_COVERAGE.set(self.coverage.ratio(snap.n_items, now / 1000))
        return [
            recommendation(user_id, items, ids, MARKOV_VERSION, latest[user_id].event_id,
                           latest[user_id].ts, now)
            for user_id, items in ranked
        ]
