"""User embeddings: recomputed from the stored sequence after each batch (idempotent) and
stored with the model version that made them (``emb`` and ``ver`` of ``sr:u:{user}``)."""

from __future__ import annotations

from redis.asyncio import Redis

from recmodels.online import ModelHolder
from serving.state_reader import decode_sequence
from serving.user_writes import UserWriter
from streamrec.keys import Keys


class UserVectorWriter:
    def __init__(self, redis: Redis, keys: Keys, models: ModelHolder) -> None:
        self._writer = UserWriter(redis, keys)
        self._models = models

    async def write(self, sequences: dict[str, bytes]) -> int:
        """Compute and store the vectors of these users; returns how many were written."""
        model = self._models.current
        if model is None or not sequences:
            return 0
        users = list(sequences)
        vectors = model.user_vectors([decode_sequence(sequences[u]) for u in users])
        await self._writer.write({}, 0, dict(zip(users, vectors, strict=True)), model.version)
        return len(users)
