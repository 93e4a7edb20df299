"""The model a worker uses online, and its hot swap.

Online item indexes are positions in the state's append-only item id list (0-based; the
key is ``Keys.item_ids`` of :mod:`streamrec.state.keys`); a model trained by the trainer has
that list, in order, as its vocabulary, so model row = online index + 1. Items newer than
the model have no row until the next version.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recmodels.checkpoint import Checkpoint
from recmodels.sasrec import SASRec, pad_histories
from recmodels.scoring.item_index import ItemIndex
from recmodels.scoring.ranking import BlendWeights

log = logging.getLogger(__name__)

USER_BATCH = 256  # sequences encoded at once (of similar lengths: little padding)
# below this many positions (items of all its sequences) a chunk is encoded in float32
# whatever the precision: autocast costs ~0.2 ms a call (weights cast again each time),
# more than bfloat16 saves on small chunks. Measured here (width 128, one thread, 150
# batches of varying size, users of 1-20 or 1-50 items), ms a call at a threshold of 128 /
# 384 positions / float32 only: 134 positions a batch 1.22 / 1.12 / 1.12, 260: 1.84 / 1.67
# / 1.63, 475: 2.53 / 2.50 / 2.64, 643: 2.82 / 2.73 / 3.21, 929: 3.95 / 3.83 / 4.66.
LOW_PRECISION_MIN_POSITIONS = 384


def encoder_dtype(precision: str) -> torch.dtype:
    """The dtype of the user encoder's matrix products for a ``worker.encoder_precision``:
    ``auto`` takes bfloat16 where the CPU computes it natively (AVX-512 BF16 or AMX), where
    it halves the encoder's cost; emulated, it would cost more than float32."""
    if precision == "auto":
        cpu = torch.cpu
        native = any(getattr(cpu, probe, lambda: False)() for probe in
                     ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
        return torch.bfloat16 if native else torch.float32
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"encoder precision {precision!r}: expected auto, float32 or bfloat16")
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


@dataclass(frozen=True)
class FreshVectors:
    """User vectors just computed from the users' current sequences."""

    version: str  # the model version that made them
    by_user: dict[str, np.ndarray]


@dataclass(frozen=True)
class OnlineModel:
    version: str
    model: SASRec
    item_vectors: np.ndarray  # [n_items, d] float32; row i = Redis index i
    created_at_ms: int
    ndcg_at_10: float | None
    blend: BlendWeights | None = None  # fitted on the trainer's holdout
    index: ItemIndex | None = None  # approximate top-k for big catalogues (exact below 200k)
    # matrix products of user_vectors (layer norms and softmax stay float32: autocast)
    encoder_dtype: torch.dtype = torch.float32

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, version: str, created_at_ms: int = 0,
                        encoder_dtype: torch.dtype = torch.float32,
                        ndcg_at_10: float | None = None,
                        blend: BlendWeights | None = None) -> OnlineModel:
        """The online form of a checkpoint whose vocabulary is the online item index in
        order (model row = index + 1)."""
        model = checkpoint.model("cpu")
        vectors = model.item_emb.weight.detach()[1:].numpy().astype(np.float32, copy=True)
        return cls(version, model, vectors, created_at_ms, ndcg_at_10, blend,
                   index=ItemIndex.build(vectors), encoder_dtype=encoder_dtype)

    @property
    def n_items(self) -> int:
        return int(self.item_vectors.shape[0])

    def user_vectors(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """``[len(sequences), d]``: the encoder's last hidden state for each Redis-index
        sequence (items unknown to the model are left out; an empty one gives zeros)."""
        n = self.n_items
        rows = [[i + 1 for i in seq if i < n] for seq in sequences]
        out = np.zeros((len(rows), self.item_vectors.shape[1]), dtype=np.float32)
        # shortest first: each chunk is padded to its own longest row only
        present = sorted((r for r, seq in enumerate(rows) if seq), key=lambda r: len(rows[r]))
        if not present:
            return out
        with torch.inference_mode():
            for start in range(0, len(present), USER_BATCH):
                part = present[start:start + USER_BATCH]
                seqs = pad_histories([rows[r] for r in part], self.model.config.max_len)
                low = (self.encoder_dtype != torch.float32
                       and int(seqs.count_nonzero()) >= LOW_PRECISION_MIN_POSITIONS)
                with torch.autocast("cpu", self.encoder_dtype, enabled=low):
                    out[part] = self.model.encode_last(seqs, bucketed=True).float().numpy()
        return out
