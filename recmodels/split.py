"""Leave-one-out split of per-user sequences and the item vocabulary.

Protocol (shared/data/README.md, Kang & McAuley 2018): for every user with at least three
interactions the last item is the test target, the second-to-last the validation target and
the rest is training. Users with fewer than three interactions are training-only.

Items get dense indices starting at 1; index 0 is padding and never a real item.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from streamrec.kernel.errors import DataError

log = logging.getLogger(__name__)

PAD = 0
MIN_EVAL_LENGTH = 3

Stage = Literal["valid", "test"]


def _natural_key(item: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order (so Video.txt item k keeps index k), then the rest."""
    return (0, int(item), "") if item.isdigit() else (1, 0, item)


class ItemVocab:
    """Item id <-> dense index (1..n). Index 0 is padding. Immutable once built."""

    __slots__ = ("_index", "_items")

    def __init__(self, items: Iterable[str]) -> None:
        self._items: tuple[str, ...] = tuple(items)
        self._index: dict[str, int] = {item: i + 1 for i, item in enumerate(self._items)}
        if len(self._index) != len(self._items):
            raise DataError("item vocabulary: duplicate item ids")

    @classmethod
    def from_sequences(cls, sequences: Mapping[str, Sequence[str]]) -> ItemVocab:
        items = {item for seq in sequences.values() for item in seq}
        return cls(sorted(items, key=_natural_key))

    @property
    def n_items(self) -> int:
        """Number of real items; score arrays have ``n_items + 1`` columns."""
        return len(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ItemVocab) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    @property
    def items(self) -> tuple[str, ...]:
        """Item ids in index order (``items[i - 1]`` has index ``i``)."""
        return self._items

    def index(self, item: str) -> int:
        try:
            return self._index[item]
        except KeyError:
            raise DataError(f"item vocabulary: unknown item id {item!r}") from None

    def encode(self, items: Iterable[str]) -> list[int]:
        return [self.index(item) for item in items]

    def to_list(self) -> list[str]:
        return list(self._items)


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """Sequences as dense indices, aligned by position with ``users``.

    ``valid[u]`` / ``test[u]`` are 0 for training-only users.
    """

    vocab: ItemVocab
    users: tuple[str, ...]
    train: tuple[tuple[int, ...], ...]
    valid: tuple[int, ...]
    test: tuple[int, ...]
    eval_users: tuple[int, ...] = field(default=(), repr=False)
    """Positions of users that have validation and test targets."""

    @property
    def n_items(self) -> int:
        return self.vocab.n_items

    def history(self, user: int, stage: Stage) -> list[int]:
        """Model input for a stage: training prefix (valid) or training + valid item (test)."""
        hist = list(self.train[user])
        if stage == "test":
            hist.append(self.valid[user])
        return hist

    def target(self, user: int, stage: Stage) -> int:
        return self.valid[user] if stage == "valid" else self.test[user]

    def interacted(self, user: int) -> set[int]:
        """Every item the user ever interacted with (train, valid and test)."""
        seen = set(self.train[user])
        for extra in (self.valid[user], self.test[user]):
            if extra != PAD:
                seen.add(extra)
        return seen

    def training_sequences(self, stage: Stage = "valid") -> list[list[int]]:
        """Sequences a model may learn from: training parts only for model selection; with
        ``stage="test"`` the validation item is appended (for a refit before testing)."""
        if stage == "valid":
            return [list(seq) for seq in self.train]
        return [self.history(u, "test") if self.valid[u] else list(self.train[u])
                for u in range(len(self.users))]


def leave_one_out(sequences: Mapping[str, Sequence[str]],
                  vocab: ItemVocab | None = None) -> LeaveOneOutSplit:
    """Split time-ordered ``user -> [item, ...]`` sequences; items are mapped by ``vocab``
    (built from all items in ``sequences`` when not given)."""
    vocab = vocab if vocab is not None else ItemVocab.from_sequences(sequences)
    users: list[str] = []
    train: list[tuple[int, ...]] = []
    valid: list[int] = []
    test: list[int] = []
    eval_users: list[int] = []
    for user, seq in sequences.items():
        encoded = vocab.encode(seq)
        position = len(users)
        users.append(user)
        if len(encoded) >= MIN_EVAL_LENGTH:
            train.append(tuple(encoded[:-2]))
            valid.append(encoded[-2])
            test.append(encoded[-1])
            eval_users.append(position)
        else:
            train.append(tuple(encoded))
            valid.append(PAD)
            test.append(PAD)
    log.info("split users=%d eval_users=%d items=%d", len(users), len(eval_users),
             vocab.n_items)
    return LeaveOneOutSplit(vocab, tuple(users), tuple(train), tuple(valid), tuple(test),
                            tuple(eval_users))
