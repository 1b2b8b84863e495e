"""Approval decisions on disk, written before the graph is resumed with them.

LangGraph keeps a resume value only as long as the run that consumes it; a process killed
between receiving a decision and checkpointing the approval node would forget it and ask the
radiologist again. Recording each decision first — keyed by job and result — lets the approval
node find it on the rerun. The table is also a plain audit trail of who decided what, when.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from agent.settings import Settings
from graphs.approval import ApprovalDecision


def checkpoint_path(settings: Settings) -> Path:
    """The one SQLite file of the workflow runtime: checkpoints, jobs and decisions."""
    return settings.run_dir / "agent.sqlite"


class DecisionStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS decisions (thread_id TEXT NOT NULL, request_id TEXT NOT NULL,"
                " decision TEXT NOT NULL, PRIMARY KEY (thread_id, request_id))"
            )
            self._conn.commit()

    @classmethod
    def for_settings(cls, settings: Settings) -> DecisionStore:
        return cls(checkpoint_path(settings))

    def record(self, thread_id: str, request_id: str, decision: ApprovalDecision) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?)", (thread_id, request_id, decision.model_dump_json())
            )
            self._conn.commit()

    def get(self, thread_id: str, request_id: str) -> ApprovalDecision | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT decision FROM decisions WHERE thread_id = ? AND request_id = ?", (thread_id, request_id)
            ).fetchone()
        return ApprovalDecision.model_validate_json(row[0]) if row else None

    def close(self) -> None:
        self._conn.close()
