"""The `jobs` table: one row per job (a LangGraph thread), so every process lists the same jobs.

The runtime (graphs/runtime.py) adds a row after it took the job's lease and keeps its status:
"running" from before a run until it ends (a process killed mid-run leaves it, which `resume`
picks up), then "waiting-approval" or "done". With workers, a job starts as "queued" until a
worker takes it, a study job is "waiting-engine" while an engine worker segments it (its own worker
is free meanwhile), and a batch ends as "dispatched" once each of its studies is a job of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tools.state.schema import jobs

JobKind = Literal["batch", "study"]
# "dispatched": a batch whose studies went to the workers as study jobs of their own (graphs/runtime.py).
# "cancelled": an operator withdrew a job that waited (graphs/runtime.py, `cancel`); nothing of it was written.
CANCELLED = "cancelled"
FINISHED = ("done", "dispatched", CANCELLED)
WAITING_ENGINE = "waiting-engine"


class Job(BaseModel):
    thread_id: str
    kind: JobKind
    label: str
    created_at: str
    status: str


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, thread_id: str, kind: JobKind, label: str, status: str = "running") -> None:
        row = Job(thread_id=thread_id, kind=kind, label=label, created_at=datetime.now(UTC).isoformat(), status=status)
        with self.engine.begin() as conn:
            conn.execute(insert(jobs).values(**row.model_dump()))

    def add_if_absent(self, thread_id: str, kind: JobKind, label: str, status: str) -> bool:
        """Add the row unless it exists (a redelivered task adds it again); whether it was added."""
        try:
            self.add(thread_id, kind, label, status)
        except IntegrityError:
            return False
        return True

    def remove(self, thread_id: str) -> None:
        """Forget a job that never ran (its message could not be queued)."""
        with self.engine.begin() as conn:
            conn.execute(delete(jobs).where(jobs.c.thread_id == thread_id))

    def set_status(self, thread_id: str, status: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.thread_id == thread_id).values(status=status))

    def count_by_status(self) -> dict[str, int]:
        """How many jobs are in each status (those with none are left out)."""
        query = select(jobs.c.status, func.count()).group_by(jobs.c.status)
        with self.engine.connect() as conn:
            return {status: count for status, count in conn.execute(query)}

    def list(self, unfinished_only: bool = False) -> list[Job]:
        query = select(jobs).order_by(jobs.c.created_at)
        if unfinished_only:
            query = query.where(jobs.c.status.not_in(FINISHED))
        with self.engine.connect() as conn:
            return [Job(**row) for row in conn.execute(query).mappings()]
