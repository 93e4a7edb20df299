"""SASRec checkpoints: weights + hyperparameters + item vocabulary, never pickles.

Layout of a checkpoint directory::

    model.safetensors   (or model.pt: a plain state_dict read with weights_only=True)
    checkpoint.json     {"format": 1, "config": {...}, "items": [...], "history": [...], ...}

Warm start (:func:`warm_start`) maps an old checkpoint onto a new vocabulary by item id:
known items keep their embedding rows, new items get freshly initialised rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recmodels.sasrec import SASRec, SASRecConfig, SASRecRecommender
from recmodels.split import ItemVocab

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "checkpoint.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "model.pt"

_st_load: Callable[[str], dict[str, torch.Tensor]] | None
_st_save: Callable[[dict[str, torch.Tensor], str], None] | None
try:  # optional dependency: preferred weight format when installed
    from safetensors.torch import load_file as _st_load
    from safetensors.torch import save_file as _st_save
except ImportError:  # pragma: no cover - exercised only without safetensors
    _st_load = None
    _st_save = None


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or inconsistent (names the file)."""


@dataclass(frozen=True)
class Checkpoint:
    config: SASRecConfig
    vocab: ItemVocab
    state_dict: Mapping[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def model(self, device: torch.device | str | None = None) -> SASRec:
        model = SASRec(self.vocab.n_items, self.config)
        model.load_state_dict(dict(self.state_dict))
        model.eval()
        return model.to(device) if device is not None else model

    def recommender(self, device: torch.device | str | None = None) -> SASRecRecommender:
        return SASRecRecommender(self.model(device))

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()}
        if _st_save is not None:
            _st_save(tensors, str(out / SAFETENSORS_FILE))
            weights = SAFETENSORS_FILE
        else:
            torch.save(tensors, out / TORCH_FILE)
            weights = TORCH_FILE
        meta = {"format": FORMAT_VERSION, "model": "sasrec", "weights": weights,
                "config": self.config.to_dict(), "items": self.vocab.to_list(),
                "history": self.history, "meta": self.meta}
        tmp = out / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        tmp.replace(out / META_FILE)
        log.info("checkpoint saved dir=%s weights=%s items=%d", out, weights,
                 self.vocab.n_items)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Checkpoint:
        src = Path(directory)
        meta_path = src / META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{meta_path}: cannot read checkpoint metadata: {exc}") \
                from None
        if meta.get("format") != FORMAT_VERSION or meta.get("model") != "sasrec":
            raise CheckpointError(f"{meta_path}: field 'format'/'model': expected "
                                  f"{FORMAT_VERSION}/'sasrec', got "
                                  f"{meta.get('format')!r}/{meta.get('model')!r}")
        weights = src / str(meta.get("weights", ""))
        if weights.name == SAFETENSORS_FILE:
            if _st_load is None:
                raise CheckpointError(f"{weights}: needs the 'safetensors' package")
            state = _st_load(str(weights))
        elif weights.name == TORCH_FILE:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(f"{meta_path}: field 'weights': unknown file {weights.name!r}")
        try:
            config = SASRecConfig.from_dict(meta["config"])
            vocab = ItemVocab(meta["items"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{meta_path}: field 'config'/'items': {exc}") from None
        expected = (vocab.n_items + 1, config.hidden)
        got = tuple(state["item_emb.weight"].shape) if "item_emb.weight" in state else None
        if got != expected:
            raise CheckpointError(f"{weights}: item_emb.weight shape {got}, expected "
                                  f"{expected} from {META_FILE}")
        return cls(config, vocab, state, list(meta.get("history", [])),
                   dict(meta.get("meta", {})))


def warm_start(old: Checkpoint, vocab: ItemVocab, config: SASRecConfig | None = None,
               seed: int | None = None) -> SASRec:
    """A model for ``vocab`` initialised from ``old``: items known to ``old`` keep their
    embedding rows (matched by item id), new items get fresh rows; positional rows are
    matched from the newest position backwards; other weights are copied when the
    architecture matches. ``config`` defaults to the old one."""
    config = config or old.config
    if seed is not None:
        torch.manual_seed(seed)
    model = SASRec(vocab.n_items, config)
    new_state = model.state_dict()
    old_state = dict(old.state_dict)
    with torch.no_grad():
        for name, tensor in new_state.items():
            src = old_state.get(name)
            if src is None or name in ("item_emb.weight", "pos_emb.weight"):
                continue
            if src.shape == tensor.shape:
                tensor.copy_(src)
            else:
                log.warning("warm start: %s shape %s -> %s, freshly initialised", name,
                            tuple(src.shape), tuple(tensor.shape))
        if old.config.hidden == config.hidden:
            old_rows = old_state["item_emb.weight"]
            pairs = [(vocab.index(item), old.vocab.index(item))
                     for item in old.vocab.items if item in vocab]
            if pairs:
                new_idx, old_idx = (torch.tensor(p) for p in zip(*pairs, strict=True))
                new_state["item_emb.weight"][new_idx] = old_rows[old_idx].to(
                    new_state["item_emb.weight"].dtype)
            n_pos = min(old.config.max_len, config.max_len)
            new_state["pos_emb.weight"][-n_pos:] = old_state["pos_emb.weight"][-n_pos:]
            log.info("warm start: kept=%d new=%d items", len(pairs),
                     vocab.n_items - len(pairs))
    model.load_state_dict(new_state)
    return model
