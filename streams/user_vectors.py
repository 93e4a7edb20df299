"""User embeddings: recomputed from the stored sequence after each batch (idempotent) and
stored with the model version that made them (``emb`` and ``ver`` of ``sr:u:{user}``).

Role ``stream`` stores them in the state step, before the users' updates are published
(the serving workers read them). Role ``all`` hands them to its own serving step, which
stores them with the served lists in one write (:meth:`Recommender.recommend`)."""

from __future__ import annotations

from recmodels.online import FreshVectors
from streamrec.state.model_holder import ModelHolder
from streamrec.state.reader import decode_sequence
from streamrec.state.user_writes import UserWriter


class UserVectorWriter:
    def __init__(self, writer: UserWriter, models: ModelHolder) -> None:
        self._writer = writer
        self._models = models

    def compute(self, sequences: dict[str, bytes]) -> FreshVectors | None:
        """The vectors of these users (packed sequences) by the current model; None when
        there is no model or no user."""
        model = self._models.current
        if model is None or not sequences:
            return None
        users = list(sequences)
        vectors = model.user_vectors([decode_sequence(sequences[u]) for u in users])
        return FreshVectors(model.version, dict(zip(users, vectors, strict=True)))

    async def store(self, fresh: FreshVectors | None) -> int:
        """Store computed vectors; returns how many were written."""
        if fresh is None or not fresh.by_user:
            return 0
        await self._writer.write({}, 0, fresh.by_user, fresh.version)
        return len(fresh.by_user)
