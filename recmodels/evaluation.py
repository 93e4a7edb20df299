"""Leave-one-out evaluation, the same for every model (one interface: ``Recommender.score``).

Two protocols (shared/data/README.md):

* ``sampled``: the target is ranked among 100 negatives drawn uniformly (seeded, without
  repetition) from items the user never interacted with (train, valid or test).
* ``full``: the target is ranked among all items, with the items of the history excluded.

Stage ``valid`` uses the training prefix as history and the validation item as target;
stage ``test`` uses training + validation item as history and the test item as target.

Ranks are 0-based. Ties with the target count as half a position each (the expected rank
under random tie-breaking), so a model that scores many items equally is neither
rewarded nor punished for the order of its ties. Per target: HR@K = [rank < K],
NDCG@K = 1/log2(rank + 2) if rank < K, MRR = 1/(rank + 1); with one relevant item
Precision@K = HR@K / K, Recall@K = HR@K and F1@K = 2PR/(P + R). Catalogue coverage@K
(share of items in any top-K list) and intra-list diversity@K (mean pairwise cosine
distance of the top-K item embeddings, when embeddings are given) use the full-ranking
top-K lists and are only reported by the ``full`` protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from recmodels.interface import Recommender, as_float_tensor, exclusion_mask
from recmodels.split import LeaveOneOutSplit, Stage

log = logging.getLogger(__name__)

EvalProtocol = Literal["sampled", "full"]
PROTOCOLS: tuple[EvalProtocol, ...] = ("sampled", "full")
Ties = Literal["average", "optimistic", "pessimistic"]
Metrics = dict[str, float]


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (5, 10, 20)
    n_negatives: int = 100
    seed: int = 2018
    batch_size: int = 1024
    ties: Ties = "average"
    max_users: int | None = None  # seeded subsample of evaluated users (cheap validation)


@dataclass(frozen=True)
class _Cases:
    users: np.ndarray  # positions in split.users
    histories: list[list[int]]
    targets: np.ndarray  # [n]


def _rank(target: torch.Tensor, others: torch.Tensor, ties: Ties) -> torch.Tensor:
    """0-based rank of ``target[:, None]`` among ``others`` (rows; -inf never ties)."""
    greater = (others > target[:, None]).sum(dim=1).to(torch.float64)
    if ties == "optimistic":
        return greater
    equal = ((others == target[:, None]) & torch.isfinite(others)).sum(dim=1).to(torch.float64)
    return greater + (equal if ties == "pessimistic" else equal / 2.0)


def rank_metrics(ranks: np.ndarray, ks: Sequence[int]) -> Metrics:
    """Mean metrics from 0-based target ranks (one relevant item per user)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: Metrics = {"users": float(len(ranks))}
    if len(ranks) == 0:
        return out
    out["mrr"] = float(np.mean(1.0 / (ranks + 1.0)))
    for k in ks:
        hit = ranks < k
        hr = float(np.mean(hit))
        out[f"hr@{k}"] = hr
        out[f"ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)))
        out[f"precision@{k}"] = hr / k
        out[f"recall@{k}"] = hr
        out[f"f1@{k}"] = hr * 2.0 / (k + 1.0)  # per hit: 2 (1/k) 1 / (1/k + 1)
    return out


def intra_list_diversity(items: torch.Tensor, embeddings: torch.Tensor) -> float:
    """Mean over lists of the mean pairwise cosine distance between listed items."""
    if items.shape[1] < 2 or items.shape[0] == 0:
        return 0.0
    vecs = torch.nn.functional.normalize(embeddings[items].to(torch.float32), dim=-1)
    sims = vecs @ vecs.transpose(1, 2)
    k = items.shape[1]
    off_diagonal = sims.sum(dim=(1, 2)) - sims.diagonal(dim1=1, dim2=2).sum(dim=1)
    return float((1.0 - off_diagonal / (k * (k - 1))).mean())


class Evaluator:
    """Holds the split, the evaluated users and the seeded negatives; evaluates any model."""

    def __init__(self, split: LeaveOneOutSplit, config: EvalConfig | None = None) -> None:
        self.split = split
        self.config = config or EvalConfig()
        users = np.asarray(split.eval_users, dtype=np.int64)
        if self.config.max_users is not None and self.config.max_users < len(users):
            rng = np.random.default_rng(self.config.seed + 1)
            users = np.sort(rng.choice(users, self.config.max_users, replace=False))
        self.users = users
        longest = max((len(split.interacted(int(u))) for u in users), default=0)
        self.n_negatives = min(self.config.n_negatives, max(1, split.n_items - longest))
        if self.n_negatives < self.config.n_negatives:
            log.warning("sampled protocol: catalogue of %d items too small for %d negatives "
                        "per user; using %d", split.n_items, self.config.n_negatives,
                        self.n_negatives)
        self._cases: dict[Stage, _Cases] = {}
        self._negatives: dict[Stage, np.ndarray] = {}

    def cases(self, stage: Stage) -> _Cases:
        if stage not in self._cases:
            histories = [self.split.history(int(u), stage) for u in self.users]
            targets = np.array([self.split.target(int(u), stage) for u in self.users],
                               dtype=np.int64)
            self._cases[stage] = _Cases(self.users, histories, targets)
        return self._cases[stage]

    def negatives(self, stage: Stage) -> np.ndarray:
        """``[n_users, n_negatives]`` distinct items each user never interacted with
        (``n_negatives`` is lowered, with a warning, only for catalogues too small)."""
        if stage not in self._negatives:
            self._negatives[stage] = self._sample_negatives(stage)
        return self._negatives[stage]

    def _sample_negatives(self, stage: Stage) -> np.ndarray:
        n_neg, n_items = self.n_negatives, self.split.n_items
        rng = np.random.default_rng([self.config.seed, 0 if stage == "valid" else 1])
        out = np.empty((len(self.users), n_neg), dtype=np.int64)
        for row, user in enumerate(self.users):
            seen = self.split.interacted(int(user))
            chosen: list[int] = []
            taken: set[int] = set()
            while len(chosen) < n_neg:
                for item in rng.integers(1, n_items + 1, size=n_neg + 16).tolist():
                    if item not in seen and item not in taken:
                        taken.add(item)
                        chosen.append(item)
                        if len(chosen) == n_neg:
                            break
            out[row] = chosen
        return out

    def evaluate(self, model: Recommender, stage: Stage = "test",
                 protocol: EvalProtocol = "sampled",
                 item_embeddings: torch.Tensor | None = None,
                 progress: Callable[[int], None] | None = None,
                 shard: tuple[int, int] = (0, 1)) -> Metrics:
        """Mean metrics over the evaluated users for one stage and protocol. ``shard``
        ``(i, n)``: only every n-th user from the i-th (data-parallel evaluation: the
        shards' means weighted by their ``users`` give the whole's)."""
        return self.evaluate_protocols(model, stage, (protocol,), item_embeddings, progress,
                                       shard)[protocol]

    def evaluate_protocols(self, model: Recommender, stage: Stage = "test",
                           protocols: Sequence[EvalProtocol] = PROTOCOLS,
                           item_embeddings: torch.Tensor | None = None,
                           progress: Callable[[int], None] | None = None,
                           shard: tuple[int, int] = (0, 1)) -> dict[EvalProtocol, Metrics]:
        """:meth:`evaluate` under several protocols from one scoring pass (the model
        scores each history once)."""
        if model.n_items != self.split.n_items:
            raise ValueError(f"evaluate: model scores {model.n_items} items, "
                             f"split has {self.split.n_items}")
        cases = self.cases(stage)
        negatives = self.negatives(stage) if "sampled" in protocols else None
        part, parts = shard
        if parts > 1:
            cases = _Cases(cases.users[part::parts], cases.histories[part::parts],
                           cases.targets[part::parts])
            negatives = None if negatives is None else negatives[part::parts]
        ranks: dict[EvalProtocol, list[np.ndarray]] = {p: [] for p in protocols}
        top = _TopLists(self.split.n_items, self.config.ks, item_embeddings)
        bs = self.config.batch_size
        for start in range(0, len(cases.targets), bs):
            histories = cases.histories[start:start + bs]
            targets = torch.from_numpy(cases.targets[start:start + bs])
            scores = as_float_tensor(model.score(histories))
            target_scores = torch.nan_to_num(scores.gather(1, targets[:, None]).squeeze(1),
                                             nan=float("-inf"))
            if negatives is not None:
                neg = torch.from_numpy(negatives[start:start + bs])
                others = torch.nan_to_num(scores.gather(1, neg), nan=float("-inf"))
                ranks["sampled"].append(_rank(target_scores, others, self.config.ties).numpy())
            if "full" in protocols:
                masked = scores.masked_fill(exclusion_mask(histories, scores.shape[1]),
                                            float("-inf"))
                torch.nan_to_num_(masked, nan=float("-inf"))
                top.add(masked)
                masked.scatter_(1, targets[:, None], float("-inf"))  # target vs. the rest
                ranks["full"].append(_rank(target_scores, masked, self.config.ties).numpy())
            if progress is not None:
                progress(len(histories))
        out: dict[EvalProtocol, Metrics] = {}
        for protocol in protocols:
            all_ranks = np.concatenate(ranks[protocol]) if ranks[protocol] else np.empty(0)
            out[protocol] = rank_metrics(all_ranks, self.config.ks)
            if protocol == "full":
                out[protocol].update(top.metrics(len(all_ranks)))
            log.debug("evaluate stage=%s protocol=%s users=%d", stage, protocol,
                      len(all_ranks))
        return out


class _TopLists:
    """Catalogue coverage@K and intra-list diversity@K of the full-ranking top-K lists."""

    def __init__(self, n_items: int, ks: Sequence[int],
                 item_embeddings: torch.Tensor | None) -> None:
        self.n_items = n_items
        self.ks = tuple(ks)
        self.embeddings = None if item_embeddings is None else item_embeddings.cpu()
        self.listed = {k: torch.zeros(n_items + 1, dtype=torch.bool) for k in self.ks}
        self.diversity: dict[int, float] = dict.fromkeys(self.ks, 0.0)

    def add(self, masked: torch.Tensor) -> None:
        """One batch of scores, the history already excluded (-inf)."""
        items = torch.topk(masked, min(max(self.ks), masked.shape[1]), dim=1).indices
        for k in self.ks:
            self.listed[k][items[:, :k].reshape(-1)] = True
            if self.embeddings is not None:
                self.diversity[k] += intra_list_diversity(items[:, :k],
                                                          self.embeddings) * items.shape[0]

    def metrics(self, n_lists: int) -> Metrics:
        out: Metrics = {}
        for k in self.ks:
            out[f"coverage@{k}"] = float(self.listed[k][1:].sum()) / self.n_items
            if self.embeddings is not None and n_lists:
                out[f"diversity@{k}"] = self.diversity[k] / n_lists
        return out
