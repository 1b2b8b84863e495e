"""The `jobs` table: one row per job (a LangGraph thread), so every process lists the same jobs.

The runtime (graphs/runtime.py) adds a row after it took the job's lease and keeps its status:
"running" from before a run until it ends (a process killed mid-run leaves it, which `resume`
picks up), then "waiting-approval" or "done".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import Engine, insert, select, update

from tools.state.schema import jobs

JobKind = Literal["batch", "study"]


class Job(BaseModel):
    thread_id: str
    kind: JobKind
    label: str
    created_at: str
    status: str


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, thread_id: str, kind: JobKind, label: str) -> None:
        row = Job(thread_id=thread_id, kind=kind, label=label, created_at=datetime.now(UTC).isoformat(), status="running")
        with self.engine.begin() as conn:
            conn.execute(insert(jobs).values(**row.model_dump()))

    def set_status(self, thread_id: str, status: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.thread_id == thread_id).values(status=status))

    def list(self, unfinished_only: bool = False) -> list[Job]:
        query = select(jobs).order_by(jobs.c.created_at)
        if unfinished_only:
            query = query.where(jobs.c.status != "done")
        with self.engine.connect() as conn:
            return [Job(**row) for row in conn.execute(query).mappings()]
