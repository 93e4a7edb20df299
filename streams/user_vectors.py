"""User embeddings: recomputed from the stored sequence after each batch (idempotent) and
stored with the model version that made them (``emb`` and ``ver`` of ``sr:u:{user}``)."""

from __future__ import annotations

import numpy as np
from redis.asyncio import Redis

from recmodels.online import ModelHolder
from serving.state_reader import decode_sequence
from streamrec.keys import Keys


class UserVectorWriter:
    def __init__(self, redis: Redis, keys: Keys, models: ModelHolder) -> None:
        self._redis = redis
        self._keys = keys
        self._models = models

    async def write(self, sequences: dict[str, bytes]) -> int:
        """Compute and store the vectors of these users; returns how many were written."""
        model = self._models.current
        if model is None or not sequences:
            return 0
        users = list(sequences)
        vectors = model.user_vectors([decode_sequence(sequences[u]) for u in users])
        pipe = self._redis.pipeline(transaction=False)
        for user, vector in zip(users, vectors, strict=True):
            pipe.hset(self._keys.user(user), mapping={
                "emb": np.ascontiguousarray(vector, dtype="<f4").tobytes(),
                "ver": model.version})
        await pipe.execute()
        return len(users)
