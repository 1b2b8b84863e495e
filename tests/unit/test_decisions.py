"""The decision store: first answer stands, matched to the exact request, plans noted (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.identities import signed_decision
from tools.workflow.approval import ApprovalDecision
from tools.workflow.decisions import DecisionConflictError, DecisionStore, payload_sha256

pytestmark = pytest.mark.unit


def _decision(action: str = "approve", reviewer: str = "dr-a") -> ApprovalDecision:
    return signed_decision(action=action, reviewer_id=reviewer, reviewer_name=reviewer, reason="x" if action == "reject" else None)


def test_first_answer_stands_and_a_different_second_is_refused(state_engine: Engine) -> None:
    store = DecisionStore(state_engine)
    payload = payload_sha256({"request_id": "1.2.3", "volume": 1.0})
    store.record("job-1", "1.2.3", payload, _decision())
    store.record("job-1", "1.2.3", payload, _decision())  # the same answer again is harmless
    with pytest.raises(DecisionConflictError, match="already answered"):
        store.record("job-1", "1.2.3", payload, _decision("reject"))
    assert store.get("job-1", "1.2.3", payload).action == "approve"


def test_a_decision_applies_only_to_the_payload_it_answered(state_engine: Engine) -> None:
    store = DecisionStore(state_engine)
    store.record("job-1", "1.2.3", payload_sha256({"a": 1}), _decision())
    assert store.get("job-1", "1.2.3", payload_sha256({"a": 2})) is None
    assert store.get("job-2", "1.2.3", payload_sha256({"a": 1})) is None


def test_plans_are_recognised_byte_for_byte(state_engine: Engine) -> None:
    store = DecisionStore(state_engine)
    plan = {"plan": {"conclusion": "left lung 1900 mL"}, "decision": {"reviewer_id": "dr-a"}}
    store.remember_plan("1.2.3", plan)
    assert store.plan_approved("1.2.3", {"decision": {"reviewer_id": "dr-a"}, "plan": {"conclusion": "left lung 1900 mL"}})
    assert not store.plan_approved("1.2.3", {"plan": {"conclusion": "normal"}, "decision": {"reviewer_id": "dr-a"}})
