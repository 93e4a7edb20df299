"""SASRec (Kang & McAuley 2018): causal self-attention over the last ``max_len`` items.

Sequences are left-padded with index 0 and right-aligned, so the newest item always sits at
the last position; positions are learned and counted from that end, which lets a batch be
cut to its longest sequence without changing the result. Padding is masked explicitly:
padded inputs are zeroed, padded keys are never attended to, padded outputs are zeroed.
Item embeddings are shared by the input and the output layer (score = h . e_item).

Training lives in :mod:`recmodels.training`; checkpoints in :mod:`recmodels.checkpoint`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

log = logging.getLogger(__name__)

Norm = Literal["pre", "post"]
Loss = Literal["auto", "ce", "sampled"]
SelectProtocol = Literal["full", "sampled"]


@dataclass(frozen=True)
class SASRecConfig:
    """Every hyperparameter of SASRec: architecture, loss and training schedule.

    The defaults are the configuration selected on the validation split of the Amazon
    Games data (see the project's benchmark notes)."""

    max_len: int = 50
    hidden: int = 128
    n_blocks: int = 2
    n_heads: int = 1
    ffn_mult: int = 1
    dropout: float = 0.5
    norm: Norm = "pre"
    # auto: full softmax ("ce") up to sampled_above_items items, sampled softmax above
    loss: Loss = "auto"
    sampled_above_items: int = 30_000
    n_negatives: int = 1024  # sampled softmax: uniform negatives shared by the batch
    cpu_bf16: bool = True  # bf16 matmuls in the CPU full-softmax loss when the CPU has bf16
    lr: float = 2e-3
    weight_decay: float = 0.0  # decoupled (AdamW)
    batch_size: int = 128
    max_epochs: int = 200
    eval_every: int = 1
    patience: int = 3  # evaluations without improvement before stopping
    plateau_decay: float = 0.3  # learning rate x this after an evaluation without improvement
    # patience and plateau_decay count evaluations of at least this many validation users;
    # a smaller validation (noisier) waits ceil(patience_users / users) times as many
    patience_users: int = 5000
    select_metric: str = "ndcg@10"
    # the validation protocol selection and early stopping read: full ranking (every item,
    # history excluded) matches what serving does; sampled (100 negatives) is the papers'
    select_protocol: SelectProtocol = "full"
    refit: bool = False  # after selection, retrain on train + valid items for the test stage
    seed: int = 42

    def __post_init__(self) -> None:
        if self.hidden % self.n_heads:
            raise ValueError(f"SASRecConfig: hidden={self.hidden} is not divisible by "
                             f"n_heads={self.n_heads}")
        for name in ("max_len", "hidden", "n_blocks", "n_heads", "ffn_mult", "batch_size",
                     "n_negatives", "sampled_above_items", "max_epochs", "eval_every",
                     "patience_users"):
            if getattr(self, name) < 1:
                raise ValueError(f"SASRecConfig: {name} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SASRecConfig: dropout must be in [0, 1), got {self.dropout}")
        if self.norm not in ("pre", "post"):
            raise ValueError(f"SASRecConfig: norm must be 'pre' or 'post', got {self.norm!r}")
        if self.select_protocol not in ("full", "sampled"):
            raise ValueError("SASRecConfig: select_protocol must be 'full' or 'sampled', got "
                             f"{self.select_protocol!r}")
        if self.loss not in ("auto", "ce", "sampled"):
            raise ValueError("SASRecConfig: loss must be 'auto', 'ce' or 'sampled', got "
                             f"{self.loss!r}")

    def loss_for(self, n_items: int) -> Literal["ce", "sampled"]:
        """The loss trained with on a catalogue of ``n_items`` (``auto`` resolved)."""
        if self.loss == "auto":
            return "sampled" if n_items > self.sampled_above_items else "ce"
        return self.loss

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SASRecConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"SASRecConfig: unknown hyperparameters {unknown}")
        return cls(**values)


def shape_bucket(n: int) -> int:
    """``n`` rounded up to one of 8 sizes per doubling above 16 (at most 12.5% more); up to
    16, ``n`` itself: those are only 16 shapes, and rounding a small batch up to 16 rows
    and positions cost it more than the kernels it saves (1 user of 4 items: 0.33 ms a
    call rounded to 16, 0.23 ms as it is; 8 users of 37 items: 0.41 and 0.35 ms).

    The CPU's matrix-product library (oneDNN) builds and caches a kernel for each new
    shape. A worker's batches of users have a new number of positions nearly every time:
    building those kernels cost about half as much as the products (measured here: 27
    users of 1-50 items, bfloat16, 3.64 ms a call with a new shape each time against 2.35
    ms with shapes seen before, 2.57 ms rounded) and grew the process by ~1 MiB a call
    until oneDNN's cache (1,024 kernels by default) was full. Rounded, a few dozen shapes
    cover every batch."""
    if n <= 16:
        return n
    step = 1 << (n.bit_length() - 4)
    return -(-n // step) * step


class _Packed:
    """The real (non-padding) positions of a left-padded batch ``[B, T]``, row-major:
    ``unpad`` takes them out of a ``[B, T, ...]`` tensor, ``pad`` puts ``[N, ...]`` back
    with zeros between; ``last`` indexes each row's last position (an item). ``bucketed``:
    ``unpad`` gives :func:`shape_bucket` of N rows, copies of the first position after the
    real ones, which the position-wise layers compute and ``pad`` drops."""

    def __init__(self, valid: torch.Tensor, allowed: torch.Tensor,
                 bucketed: bool = False) -> None:
        self.batch, self.width = valid.shape
        self.allowed = allowed
        self.flat = valid.reshape(-1).nonzero().squeeze(1)
        self.real = len(self.flat)
        self.gather = self.flat
        rows_to = shape_bucket(self.real) if bucketed else self.real
        if rows_to > self.real:
            self.gather = torch.cat([self.flat, self.flat[:1].expand(rows_to - self.real)])
        self.last = valid.sum(dim=1).cumsum(dim=0) - 1

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.batch * self.width, -1).index_select(0, self.gather)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(self.batch * self.width, x.shape[1])
        return out.index_copy_(0, self.flat, x[:self.real]).view(self.batch, self.width, -1)


class _Block(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        d = config.hidden
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.pre = config.norm == "pre"
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln_attn = nn.LayerNorm(d, eps=1e-8)
        self.ln_ffn = nn.LayerNorm(d, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(d, d * config.ffn_mult), nn.GELU(),
                                 nn.Dropout(config.dropout), nn.Linear(d * config.ffn_mult, d))
        self.drop = nn.Dropout(config.dropout)

    def _attend(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(dim=2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0)
        out: torch.Tensor = self.drop(self.out(y.transpose(1, 2).reshape(b, t, d)))
        return out

    def forward_packed(self, x: torch.Tensor, rows: _Packed) -> torch.Tensor:
        """``forward`` on the real positions only, ``[N, d]`` in, ``[N, d]`` out: the
        position-wise layers skip the padding; attention runs on the padded layout."""
        h = self.ln_attn(x) if self.pre else x
        q, k, v = rows.pad(self.qkv(h)).view(
            rows.batch, rows.width, 3, self.n_heads, -1).transpose(1, 3).unbind(dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=rows.allowed)
        return self._after_attention(x, self.out(rows.unpad(y.transpose(1, 2))))

    def forward_last(self, x: torch.Tensor, rows: _Packed) -> torch.Tensor:
        """The block's output at each row's last position only, ``[B, d]``, from its real
        positions ``x`` (``[N, d]``): the last query attends to every key it may see, and
        the feed-forward runs on that position alone; equal to the last rows of
        ``forward_packed``."""
        d = x.shape[1]
        keys_in = self.ln_attn(x) if self.pre else x
        w, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(keys_in[rows.last], w[:d], bias[:d]).view(
            rows.batch, self.n_heads, 1, -1)
        k, v = rows.pad(F.linear(keys_in, w[d:], bias[d:])).view(
            rows.batch, rows.width, 2, self.n_heads, -1).transpose(1, 3).unbind(dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=rows.allowed[:, :, -1:, :])
        return self._after_attention(x[rows.last], self.out(y.reshape(rows.batch, d)))

    def _after_attention(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The rest of the block once attention gave ``attended`` for the positions ``x``:
        the residual, then the feed-forward with its residual (pre- or post-norm)."""
        out: torch.Tensor
        if self.pre:
            x = x + attended
            out = x + self.drop(self.ffn(self.ln_ffn(x)))
        else:
            x = self.ln_attn(x + attended)
            out = self.ln_ffn(x + self.drop(self.ffn(x)))
        return out

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return self._after_attention(
            x, self._attend(self.ln_attn(x) if self.pre else x, allowed))


class SASRec(nn.Module):
    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        self.n_items = n_items
        self.config = config
        d = config.hidden
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_blocks))
        self.final_ln = nn.LayerNorm(d, eps=1e-8) if config.norm == "pre" else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, param in self.named_parameters():
            if param.dim() > 1:
                nn.init.xavier_normal_(param)
            elif name.endswith("bias"):
                nn.init.zeros_(param)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` left-padded item indices (T <= max_len) -> hidden states ``[B, T, d]``
        (zero at padded positions); position t sees positions <= t only."""
        x, valid, allowed = self._embed(seqs)
        for block in self.blocks:
            x = block(x, allowed) * valid.unsqueeze(-1)
        out: torch.Tensor = self.final_ln(x) * valid.unsqueeze(-1)
        return out

    def encode_last(self, seqs: torch.Tensor, bucketed: bool = False) -> torch.Tensor:
        """The hidden state at the last position, ``[B, d]``, for rows whose last position
        is an item (left padding): ``encode(seqs)[:, -1]`` computed for inference with the
        position-wise layers on the real positions only (no work on padding), and the last
        block for the last position only.

        ``bucketed``: the matrix products get shapes rounded by :func:`shape_bucket` (rows
        of one item appended to the batch, copies of a position added to the positions),
        for callers whose batches vary in size (the worker); the result is the same."""
        if self.training:
            raise RuntimeError("SASRec.encode_last is for inference: call model.eval() first")
        n = seqs.shape[0]
        rows_to = shape_bucket(n) if bucketed else n
        if rows_to > n:
            filler = seqs.new_zeros(rows_to - n, seqs.shape[1])
            filler[:, -1] = 1  # one item each: a valid last position, the least extra work
            seqs = torch.cat([seqs, filler])
        valid, allowed = self._mask(seqs)
        rows = _Packed(valid, allowed, bucketed)
        x = self._embed_at(seqs, rows.gather)
        blocks: list[_Block] = list(self.blocks)  # type: ignore[arg-type]
        for block in blocks[:-1]:
            x = block.forward_packed(x, rows)
        out: torch.Tensor = self.final_ln(blocks[-1].forward_last(x, rows))
        return out[:n]

    def _embed(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        valid, allowed = self._mask(seqs)
        t = seqs.shape[1]
        positions = torch.arange(self.config.max_len - t, self.config.max_len,
                                 device=seqs.device)
        x = self.item_emb(seqs) * math.sqrt(self.config.hidden) + self.pos_emb(positions)
        return self.emb_drop(x) * valid.unsqueeze(-1), valid, allowed

    def _embed_at(self, seqs: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """``_embed``'s input to the blocks at the flat positions ``flat`` of ``seqs``
        (``[N, d]``, items only: inference, no dropout), without the work on padding."""
        t = seqs.shape[1]
        positions = flat % t + (self.config.max_len - t)
        x: torch.Tensor = (self.item_emb(seqs.reshape(-1).index_select(0, flat))
                           * math.sqrt(self.config.hidden) + self.pos_emb(positions))
        return x

    def _mask(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The real positions ``[B, T]`` of left-padded ``seqs``, and which key each query
        may attend to, ``[B, 1, T, T]``."""
        t = seqs.shape[1]
        if t > self.config.max_len:
            raise ValueError(f"SASRec.encode: sequence length {t} > max_len "
                             f"{self.config.max_len}")
        valid = seqs != 0
        causal = torch.ones(t, t, dtype=torch.bool, device=seqs.device).tril()
        eye = torch.eye(t, dtype=torch.bool, device=seqs.device)
        # query i may attend to key j <= i when j is a real item; itself always (so a
        # padded query never gets an empty row and NaNs); padded outputs are zeroed below
        allowed = ((causal & valid[:, None, :]) | eye).unsqueeze(1)
        return valid, allowed

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every item for hidden states ``[..., d]`` -> ``[..., n_items + 1]``;
        the padding column is -inf."""
        out = hidden @ self.item_emb.weight.T
        return out.index_fill(-1, torch.tensor([0], device=out.device), float("-inf"))

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.encode(seqs)


def pad_histories(histories: Sequence[Sequence[int]], max_len: int,
                  device: torch.device | None = None) -> torch.Tensor:
    """Last ``max_len`` items of each history, left-padded with 0 to the longest row."""
    width = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    # built in numpy: a torch tensor per row cost ~6 us each (200 users of 40-50 items:
    # 1.45 ms against 0.20 ms)
    out = np.zeros((len(histories), width), dtype=np.int64)
    for row, history in enumerate(histories):
        tail = history[-width:]
        if len(tail):
            out[row, width - len(tail):] = tail
    padded = torch.from_numpy(out)
    return padded.to(device) if device is not None else padded


class SASRecRecommender:
    """Inference wrapper implementing :class:`recmodels.interface.Recommender`."""

    def __init__(self, model: SASRec, batch_size: int = 1024) -> None:
        self.model = model
        self.batch_size = batch_size

    @property
    def n_items(self) -> int:
        return self.model.n_items

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def item_embeddings(self) -> torch.Tensor:
        return self.model.item_emb.weight.detach()

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[len(histories), n_items + 1]`` float32 scores on the model's device; an empty
        history gets all-zero scores (no preference)."""
        was_training = self.model.training
        self.model.eval()
        out = torch.empty((len(histories), self.n_items + 1), device=self.device)
        # similar lengths batched together: less padding, same scores
        order = sorted(range(len(histories)), key=lambda i: len(histories[i]))
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    rows = order[start:start + self.batch_size]
                    seqs = pad_histories([histories[i] for i in rows],
                                         self.model.config.max_len, self.device)
                    last = self.model.encode(seqs)[:, -1, :]
                    out[torch.tensor(rows, device=self.device)] = self.model.logits(last).float()
        finally:
            self.model.train(was_training)
        return out
