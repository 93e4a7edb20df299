"""Recommendation message v1 and the tail formatter."""

from __future__ import annotations

from serving.message import recommendation, validate
from serving.ranking import Reason, Scored
from streamrec.tail import format_recommendation


def test_v1_message_names_items_and_reasons_by_id() -> None:
    ids = ["sku-0", "sku-1", "sku-2"]
    message = recommendation("u-42", [Scored(2, 0.9, [Reason("markov", after=1, p=0.3)]),
                                      Scored(0, 0.1, [Reason("popular", score=1.0)])],
                             ids, "markov", "e-1", 17, generated_at=99)
    assert message == {
        "user_id": "u-42", "generated_at": 99, "model_version": "markov",
        "trigger": {"event_id": "e-1", "ts": 17},
        "items": [{"item_id": "sku-2", "score": 0.9,
                   "reasons": [{"kind": "markov", "after": "sku-1", "p": 0.3}]},
                  {"item_id": "sku-0", "score": 0.1,
                   "reasons": [{"kind": "popular", "score": 1.0}]}],
    }
    assert validate(message) == []


def test_validate_reports_broken_messages() -> None:
    assert validate([]) == ["not an object"]
    broken = {"user_id": "u", "generated_at": 1, "model_version": "m", "trigger": {},
              "items": [{"item_id": "a", "score": 0.1, "reasons": [{"kind": "magic"}]},
                        {"item_id": "b", "score": 0.5, "reasons": [{"kind": "popular"}]}]}
    problems = validate(broken)
    assert any("unknown kind" in p for p in problems)
    assert "items: not ordered best first" in problems


def test_tail_shows_titles() -> None:
    text = format_recommendation(
        {"user_id": "7", "model_version": "markov", "trigger": {"event_id": "e"},
         "items": [{"item_id": "1", "score": 0.5,
                    "reasons": [{"kind": "markov", "after": "2", "p": 0.5}]}]},
        {"1": "Toy Story (1995)", "2": "GoldenEye (1995)"})
    assert "Toy Story (1995)" in text
    assert "after GoldenEye (1995)" in text
