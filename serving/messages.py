"""Ranked items (indexes, reasons) to the recommendation message (ids)."""

from __future__ import annotations

from collections.abc import Sequence

from recmodels.scoring.ranking import Reason, Scored
from streamrec.contracts.recommendation import ItemReason, Recommendation, RecommendedItem


def _reason(reason: Reason, ids: Sequence[str]) -> ItemReason:
    return ItemReason(reason.kind, ids[reason.after] if reason.after is not None else None,
                      reason.p, reason.score)


def to_message(user_id: str, items: Sequence[Scored], ids: Sequence[str], model_version: str,
               trigger_event_id: str | None, trigger_ts: int | None,
               generated_at: int) -> Recommendation:
    """The message of a ranked list; ``ids``: item id by index."""
    return Recommendation(
        user_id, generated_at, model_version, trigger_event_id, trigger_ts,
        tuple(RecommendedItem(ids[s.item], s.score, tuple(_reason(r, ids) for r in s.reasons))
              for s in items))
