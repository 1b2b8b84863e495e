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
import sqlite3
import threading
from pathlib import Path
from typing import Any

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
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS approval_decisions (thread_id TEXT NOT NULL, request_id TEXT NOT NULL,"
                " payload_sha256 TEXT NOT NULL, decision TEXT NOT NULL, PRIMARY KEY (thread_id, request_id))"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS approved_plans (request_id TEXT NOT NULL, plan_sha256 TEXT NOT NULL,"
                " PRIMARY KEY (request_id, plan_sha256))"
            )
            self._conn.commit()

    def record(self, thread_id: str, request_id: str, payload_hash: str, decision: ApprovalDecision) -> None:
        """Keep the first answer to a request; refuse a different second one."""
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO approval_decisions VALUES (?, ?, ?, ?) ON CONFLICT(thread_id, request_id) DO NOTHING",
                (thread_id, request_id, payload_hash, decision.model_dump_json()),
            )
            self._conn.commit()
        if cursor.rowcount == 0:
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
        with self._lock:
            row = self._conn.execute(
                "SELECT decision FROM approval_decisions WHERE thread_id = ? AND request_id = ? AND payload_sha256 = ?",
                (thread_id, request_id, payload_hash),
            ).fetchone()
        return ApprovalDecision.model_validate_json(row[0]) if row else None

    def remember_plan(self, request_id: str, plan: dict[str, Any]) -> None:
        """Note the exact write plan an approval covers (what the repair path may reuse)."""
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO approved_plans VALUES (?, ?)", (request_id, payload_sha256(plan))
            )
            self._conn.commit()

    def plan_approved(self, request_id: str, plan: dict[str, Any]) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM approved_plans WHERE request_id = ? AND plan_sha256 = ?", (request_id, payload_sha256(plan))
            ).fetchone()
        return row is not None

    def close(self) -> None:
        self._conn.close()
