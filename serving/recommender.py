"""Turns user updates into recommendation messages: read state, score, blend, filter, rank."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from recmodels.online import FreshVectors, OnlineModel
from recmodels.scoring.batch_scoring import BatchInputs, rank_batch
from recmodels.scoring.coverage import CoverageWindow
from recmodels.scoring.diversity import mmr
from recmodels.scoring.ranking import BlendWeights, UserState, exclusions
from serving.messages import to_message
from streamrec.contracts.recommendation import Recommendation
from streamrec.contracts.user_update import UserUpdate
from streamrec.kernel import metrics
from streamrec.kernel.settings import ServingSettings
from streamrec.state.catalog import ItemCatalog
from streamrec.state.model_holder import ModelHolder
from streamrec.state.reader import ServingStateReader, Snapshot

log = logging.getLogger(__name__)

MARKOV_VERSION = "markov"


def _user_vectors(users: Sequence[UserState], model: OnlineModel,
                  fresh: FreshVectors | None) -> tuple[list[np.ndarray], FreshVectors | None]:
    """Each user's vector by this model version, and the vectors to store.

    Without ``fresh`` (role serving, pulls): the stored vector when this version made it,
    else recomputed from the sequence; nothing to store. With ``fresh`` (role all: the
    state step just computed the vectors of the users it changed): those, and any other
    user recomputed (an event delivered again after a crash: its stored vector may predate
    the sequence), all to be stored with the lists."""
    own = fresh.by_user if fresh is not None and fresh.version == model.version else {}
    stale = [u for u in users if u.user_id not in own and (
        fresh is not None or u.vector is None or u.vector_version != model.version)]
    made = dict(zip((u.user_id for u in stale),
                    model.user_vectors([u.sequence for u in stale]), strict=True))
    out: list[np.ndarray] = []
    for u in users:
        vector = own[u.user_id] if u.user_id in own else made.get(u.user_id, u.vector)
        assert vector is not None
        out.append(vector)
    store = FreshVectors(model.version, {**own, **made}) if fresh is not None else None
    return out, store


@dataclass(frozen=True)
class Served:
    """A batch's lists: the messages, each user's items, and the vectors to store."""

    messages: list[Recommendation]
    items: dict[str, list[int]]
    vectors: FreshVectors | None
    n_items: int
    at_ms: int


async def _ready(snapshot: asyncio.Future[Snapshot], user_ids: list[str]) -> Snapshot | None:
    """The snapshot read ahead, if it succeeded and is of these users (in this order)."""
    try:
        snap = await snapshot
    except Exception as exc:  # Redis away: the caller reads again (and retries)
        log.debug("state read ahead failed error=%s", type(exc).__name__)
        return None
    return snap if [u.user_id for u in snap.users] == user_ids else None


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
                                     settings.weight_trending, settings.normalisation,
                                     settings.blend_strength)
        self.coverage = CoverageWindow(settings.coverage_window_s)

    def weights(self, model: OnlineModel | None) -> BlendWeights:
        """The model's fitted blend when ``serving.blend`` is ``fitted`` and it has one, else
        the weights of the settings."""
        if self._settings.blend == "fitted" and model is not None and model.blend is not None:
            return model.blend
        return self._weights

    async def read_ahead(self, user_ids: Sequence[str]) -> asyncio.Future[Snapshot]:
        """Send the read of these users' state now (the state step just applied them); the
        future parses the reply (see :meth:`lists`' ``snapshot``)."""
        return await self._reader.read_ahead(user_ids)

    async def recommend(self, updates: Sequence[UserUpdate],
                        n: int | None = None) -> list[Recommendation]:
        """One v1 message per distinct user, for the latest update of each, not
        remembered (pull requests)."""
        return (await self.lists(updates, n)).messages

    async def lists(self, updates: Sequence[UserUpdate], n: int | None = None,
                    fresh: FreshVectors | None = None,
                    snapshot: asyncio.Future[Snapshot] | None = None) -> Served:
        """The lists of the users of ``updates`` (the latest update of each), as messages,
        not yet remembered. ``fresh``: the vectors the state step computed for these users
        (role all), used here and stored with the lists. ``snapshot``: their state, read by
        the state step right after applying the batch (without stored vectors: fresh ones
        are at hand, and any missing is recomputed); read here when absent or failed."""
        latest: dict[str, UserUpdate] = {}
        for update in updates:
            latest[update.user_id] = update
        if not latest:
            return Served([], {}, None, 0, 0)
        cfg = self._settings
        snap = await _ready(snapshot, list(latest)) if snapshot is not None else None
        if snap is None:
            snap = await self._reader.read(list(latest), vectors=fresh is None)
        model = self._models.current if self._models is not None else None
        weights = self.weights(model)
        use_sequence = model is not None and weights.needs_sequence
        vectors, to_store = None, fresh
        if use_sequence and model is not None:
            vectors, to_store = _user_vectors(snap.users, model, fresh)
        size = n or cfg.top_n
        diversify = model is not None and cfg.diversity_lambda < 1.0
        excluded = [exclusions(u, cfg.exclude_recent, cfg.exclude_purchased, snap.blocked)
                    for u in snap.users]
        lists = rank_batch(
            BatchInputs(n_users=len(snap.users), n_items=snap.n_items, markov=snap.markov,
                        exclude=excluded, has_history=[bool(u.sequence) for u in snap.users],
                        trending=snap.popular[:cfg.trending_candidates], popular=snap.popular,
                        user_vectors=vectors,
                        item_vectors=model.item_vectors if model is not None else None,
                        sequence_k=cfg.sequence_candidates,
                        item_index=model.index if model is not None else None),
            weights, cfg.markov_smoothing, cfg.markov_recency_decay,
            size * cfg.diversity_pool if diversify else size)
        if diversify and model is not None:
            lists = [mmr(pool, model.item_vectors, cfg.diversity_lambda, size) for pool in lists]
        ranked = [(user.user_id, items) for user, items in zip(snap.users, lists, strict=True)]
        # Every index in the lists (items, and the items their Markov reasons follow) is
        # below the item count read with the state, or the model's (its vocabulary is a
        # prefix of the append-only id list): the ids up to there, without going through
        # every item and reason of the batch (0.2 ms per 20 users).
        highest = max(snap.n_items, model.n_items if model is not None else 0) - 1
        ids = await self._catalog.ensure(highest)
        now = self._clock_ms()
        version = model.version if model is not None else MARKOV_VERSION
        messages = [to_message(user_id, items, ids, version, latest[user_id].event_id,
                               latest[user_id].ts, now)
                    for user_id, items in ranked]
        return Served(messages, {user_id: [s.item for s in items] for user_id, items in ranked},
                      to_store, snap.n_items, now)

    async def remember(self, served: Served) -> None:
        """Store the served lists (for the online hit rate) with the vectors to store, in
        one round trip, and count them in the served coverage."""
        if not served.items:
            return
        await self._reader.remember_served(served.items, self._settings.served_ttl_s,
                                           served.vectors)
        for served_items in served.items.values():
            self.coverage.add(served_items, served.at_ms / 1000)
        metrics.SERVED_COVERAGE.set(self.coverage.ratio(served.n_items, served.at_ms / 1000))
