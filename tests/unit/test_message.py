"""Recommendation message v1 and the tail formatter."""

from __future__ import annotations

import math

import orjson
import pytest

from recmodels.scoring.ranking import Reason, Scored
from serving.messages import to_message
from streamrec.app.tail import format_recommendation
from streamrec.contracts.recommendation import (
    InvalidRecommendation,
    Recommendation,
    six_decimals,
    validate,
)


def test_v1_message_names_items_and_reasons_by_id() -> None:
    ids = ["sku-0", "sku-1", "sku-2"]
    typed = to_message("u-42", [Scored(2, 0.9, [Reason("markov", after=1, p=0.3)]),
                                Scored(0, 0.1, [Reason("popular", score=1.0)])],
                       ids, "markov", "e-1", 17, generated_at=99)
    message = orjson.loads(typed.to_json())
    assert message == {
        "user_id": "u-42", "generated_at": 99, "model_version": "markov",
        "trigger": {"event_id": "e-1", "ts": 17},
        "items": [{"item_id": "sku-2", "score": 0.9,
                   "reasons": [{"kind": "markov", "after": "sku-1", "p": 0.3}]},
                  {"item_id": "sku-0", "score": 0.1,
                   "reasons": [{"kind": "popular", "score": 1.0}]}],
    }
    assert validate(message) == []
    assert Recommendation.from_json(typed.to_json()) == typed  # consumers parse it back


def test_scores_go_on_the_wire_with_six_decimals_at_most() -> None:
    ids = ["sku-0", "sku-1"]
    message = to_message("u", [Scored(1, 1 / 3, [Reason("sequence", score=-7.1234564)]),
                               Scored(0, 2e-7, [Reason("markov", after=1, p=0.1 + 0.2)])],
                         ids, "sasrec-0001", None, None, generated_at=1)
    wire = message.to_json()
    assert b'"score":0.333333' in wire and b'"score":-7.123456' in wire
    assert b'"p":0.3}' in wire and b'"score":0.0,' in wire
    assert orjson.loads(wire)["items"][0]["score"] == 0.333333
    assert six_decimals(math.inf) == math.inf and math.isnan(six_decimals(math.nan))
    assert six_decimals(2.5e-6) == 3e-6 and six_decimals(-1e-9) == 0.0


def test_validate_reports_broken_messages() -> None:
    assert validate([]) == ["not an object"]
    broken = {"user_id": "u", "generated_at": 1, "model_version": "m", "trigger": {},
              "items": [{"item_id": "a", "score": 0.1, "reasons": [{"kind": "magic"}]},
                        {"item_id": "b", "score": 0.5, "reasons": [{"kind": "popular"}]}]}
    problems = validate(broken)
    assert any("unknown kind" in p for p in problems)
    assert "items: not ordered best first" in problems
    with pytest.raises(InvalidRecommendation, match=r"items\[0\]\.reasons: unknown kind"):
        Recommendation.from_json(orjson.dumps(broken))
    with pytest.raises(InvalidRecommendation, match="not JSON"):
        Recommendation.from_json(b"{oops")


def test_tail_shows_titles() -> None:
    text = format_recommendation(
        {"user_id": "7", "model_version": "markov", "trigger": {"event_id": "e"},
         "items": [{"item_id": "1", "score": 0.5,
                    "reasons": [{"kind": "markov", "after": "2", "p": 0.5}]}]},
        {"1": "Toy Story (1995)", "2": "GoldenEye (1995)"})
    assert "Toy Story (1995)" in text
    assert "after GoldenEye (1995)" in text
