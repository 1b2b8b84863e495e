"""One decision check for the CLI and the app: ApprovalDecision's rule, said in one readable message."""

from __future__ import annotations

import pytest

from agent.review import DecisionError, build_decision

pytestmark = pytest.mark.unit


def test_a_valid_answer_becomes_the_decision() -> None:
    decision = build_decision("reject", " dr-lee ", "Dr. Lee", "  misses the base ")
    assert (decision.action, decision.reviewer_id, decision.reason) == ("reject", "dr-lee", "misses the base")
    assert not decision.automatic
    assert build_decision("approve", "ops", "Ops", automatic=True).reviewer().reviewed is False


def test_a_rejection_without_reason_says_so_once() -> None:
    with pytest.raises(DecisionError) as info:
        build_decision("reject", "dr-lee", "Dr. Lee", "   ")
    assert str(info.value) == "A rejection needs a reason: say what is wrong with the contours. Nothing was decided."


def test_a_blank_reviewer_is_one_sentence_not_a_pydantic_dump() -> None:
    with pytest.raises(DecisionError) as info:
        build_decision("approve", " ", "")
    message = str(info.value)
    assert message.count("name as reviewer") == 1 and message.endswith("Nothing was decided.")
    assert "String should have" not in message and "validation error" not in message


def test_an_unknown_action_names_the_field() -> None:
    with pytest.raises(DecisionError, match="Action: Input should be 'approve' or 'reject'"):
        build_decision("maybe", "dr-lee", "Dr. Lee")
