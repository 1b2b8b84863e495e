"""Approval decisions on disk, written before the graph is resumed with them.

LangGraph keeps a resume value only as long as the run that consumes it; a process killed
between receiving a decision and checkpointing the approval node would forget it and ask the
radiologist again. Recording each decision first — keyed by job and result, together with the
sha256 of the exact approval request it answers — lets the approval node find it on the rerun,
and only for that very request. The first answer to a request is final: a second, different
answer (another terminal, the app) is refused. The table is also a plain local audit trail, and
the proof the repair path asks for: a write plan read back from the EHR is only reused when this
table holds the matching approval.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from tools.state.schema import approval_decisions, approved_plans
from tools.workflow.approval import ApprovalDecision, ApprovalRequest


def payload_sha256(payload: dict[str, Any]) -> str:
    """A stable hash of an approval request as shown to the reviewer."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def request_sha256(request: ApprovalRequest) -> str:
    """The hash a decision is recorded under: the request exactly as the reviewer was shown it."""
    return payload_sha256(request.model_dump(mode="json"))


class DecisionConflictError(RuntimeError):
    """The approval was already answered differently."""


class DecisionStore:
    """The `approval_decisions` and `approved_plans` tables of the runtime's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, thread_id: str, request_id: str, payload_hash: str, decision: ApprovalDecision) -> None:
        """Keep the first answer to a request; refuse a different second one."""
        row = {"thread_id": thread_id, "request_id": request_id, "payload_sha256": payload_hash,
               "decision": decision.model_dump_json()}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(approval_decisions).values(**row))
            return
        except IntegrityError:  # answered before: the first answer stands
            pass
        existing = self.get(thread_id, request_id, payload_hash)
        same = existing is not None and (existing.action, existing.reviewer_id, existing.issuer) == (
            decision.action, decision.reviewer_id, decision.issuer
        )
        if not same:
            raise DecisionConflictError(
                f"result {request_id} of job {thread_id} was already answered; the first answer stands."
            )

    def get(self, thread_id: str, request_id: str, payload_hash: str) -> ApprovalDecision | None:
        """The recorded answer to exactly this request (same job, same result, same payload)."""
        query = select(approval_decisions.c.decision).where(
            approval_decisions.c.thread_id == thread_id,
            approval_decisions.c.request_id == request_id,
            approval_decisions.c.payload_sha256 == payload_hash,
        )
        with self.engine.connect() as conn:
            decision = conn.execute(query).scalar_one_or_none()
        return ApprovalDecision.model_validate_json(decision) if decision is not None else None

    def remember_plan(self, request_id: str, plan: dict[str, Any]) -> None:
        """Note the exact write plan an approval covers (what the repair path may reuse)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(approved_plans).values(request_id=request_id, plan_sha256=payload_sha256(plan)))
        except IntegrityError:  # noted already
            pass

    def plan_approved(self, request_id: str, plan: dict[str, Any]) -> bool:
        query = select(approved_plans.c.request_id).where(
            approved_plans.c.request_id == request_id, approved_plans.c.plan_sha256 == payload_sha256(plan)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None
