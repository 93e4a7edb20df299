"""The one recommender interface every model implements (popularity, Markov, SASRec, ...).

A model only has to score: ``score(histories)`` returns one row of scores per history over
every item index (column 0 is padding and is ignored). Ranking, exclusion of items and
top-k selection are shared here, so every model is filtered the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

Scores = np.ndarray | torch.Tensor


@runtime_checkable
class Recommender(Protocol):
    """Inference side of a model; training lives elsewhere (``fit`` / ``training.train``)."""

    @property
    def n_items(self) -> int:
        """Number of real items; ``score`` returns ``n_items + 1`` columns."""
        ...

    def score(self, histories: Sequence[Sequence[int]]) -> Scores:
        """Scores ``[len(histories), n_items + 1]``; higher is better. Histories are dense
        item indices in time order (oldest first) and may be empty."""
        ...


def as_float_tensor(scores: Scores) -> torch.Tensor:
    """Scores as a float32 CPU tensor; no copy when they already are one, so callers must
    not modify the result in place."""
    if isinstance(scores, np.ndarray):
        array = np.ascontiguousarray(scores, dtype=np.float32)
        return torch.from_numpy(array if array.flags.writeable else array.copy())
    return scores.detach().to(device="cpu", dtype=torch.float32)


def exclusion_mask(rows: Sequence[Iterable[int]], n_columns: int) -> torch.Tensor:
    """Boolean ``[len(rows), n_columns]`` with True at every listed item and at padding."""
    mask = torch.zeros((len(rows), n_columns), dtype=torch.bool)
    mask[:, 0] = True
    row_ids: list[int] = []
    col_ids: list[int] = []
    for r, items in enumerate(rows):
        for item in items:
            if 0 < item < n_columns:
                row_ids.append(r)
                col_ids.append(item)
    if row_ids:
        mask[torch.tensor(row_ids), torch.tensor(col_ids)] = True
    return mask


def top_k(scores: torch.Tensor, k: int, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask excluded items with -inf, then ``topk``. Returns (items, scores); an excluded
    item can only come back when fewer than ``k`` items remain, and then with score -inf."""
    masked = scores.masked_fill(exclude.to(scores.device), float("-inf"))
    k = min(k, masked.shape[1])
    values, items = torch.topk(masked, k, dim=1)
    return items, values


def recommend(model: Recommender, histories: Sequence[Sequence[int]], k: int,
              exclude: Sequence[Iterable[int]] | None = None,
              exclude_history: bool = True) -> list[list[tuple[int, float]]]:
    """Top-``k`` ``(item, score)`` per history; items in ``exclude`` (and, by default, in
    the history itself) never appear. Rows may be shorter than ``k`` near exhaustion."""
    if not histories:
        return []
    scores = as_float_tensor(model.score(histories))
    rows: list[list[int]] = []
    for r, history in enumerate(histories):
        banned = list(history) if exclude_history else []
        if exclude is not None:
            banned.extend(exclude[r])
        rows.append(banned)
    items, values = top_k(scores, k, exclusion_mask(rows, scores.shape[1]))
    out: list[list[tuple[int, float]]] = []
    for item_row, value_row in zip(items.tolist(), values.tolist(), strict=True):
        out.append([(i, v) for i, v in zip(item_row, value_row, strict=True)
                    if v != float("-inf")])
    return out
