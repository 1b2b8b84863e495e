"""The reviewers' worklist: every pending approval, longest waiting first, with who holds it.

The API (`GET /api/v1/approvals`), `imaging-agent approvals list` and the app's Approvals tab all
read it here. Waiting time counts from when the job stopped at the approval (the runtime notes it
in `review_claims`); an approval that waited before that table existed counts from its job's start.
Claims themselves are tools/workflow/claims.py; `decide` enforces them (graphs/runtime.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from graphs.runtime import PendingApproval, WorkflowRuntime
from tools.workflow.claims import Claim, ClaimHolder

ANY_FLAG = "any"
NO_FLAG = "none"


class WorklistEntry(BaseModel):
    """One pending approval as the worklist shows it."""

    approval: PendingApproval
    waiting_since: datetime
    claim: Claim | None = Field(description="the active claim, if a reviewer holds the approval")

    @property
    def engine(self) -> str:
        return self.approval.request.engine

    @property
    def modality(self) -> str:
        return self.approval.request.series.modality

    @property
    def flag_codes(self) -> list[str]:
        return sorted({flag.code for flag in self.approval.request.flags})

    def waiting_s(self, now: datetime) -> float:
        return max(0.0, (now - self.waiting_since).total_seconds())


class WorklistFilter(BaseModel):
    """Which approvals to show; None shows all."""

    flag: str | None = Field(
        default=None, description=f"a QA flag code (e.g. volume-low), '{ANY_FLAG}' (some flag) or '{NO_FLAG}' (no flag)"
    )
    engine: str | None = Field(default=None, description="the segmentation engine, e.g. lung-threshold")
    modality: str | None = Field(default=None, description="the segmented series' modality, e.g. CT")

    def keeps(self, entry: WorklistEntry) -> bool:
        codes = entry.flag_codes
        if (self.flag == ANY_FLAG and not codes) or (self.flag == NO_FLAG and codes):
            return False
        if self.flag not in (None, ANY_FLAG, NO_FLAG) and self.flag not in codes:
            return False
        if self.engine is not None and entry.engine != self.engine:
            return False
        return self.modality is None or entry.modality.upper() == self.modality.upper()


def waiting_text(seconds: float) -> str:
    """A waiting time as a person reads it: 2 d 3 h, 3 h 05 min, 12 min."""
    waited = timedelta(seconds=int(seconds))
    hours, rest = divmod(waited.seconds, 3600)
    if waited.days:
        return f"{waited.days} d {hours} h"
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min"


def worklist(runtime: WorkflowRuntime, only: WorklistFilter | None = None) -> list[WorklistEntry]:
    """The pending approvals `only` keeps, longest waiting first."""
    pending = runtime.pending_approvals()
    rows = runtime.claims.waiting()
    started = {job.thread_id: datetime.fromisoformat(job.created_at) for job in runtime.jobs(unfinished_only=True)}
    entries = []
    for approval in pending:
        row = rows.get((approval.thread_id, approval.request.request_id))
        since = row.waiting_since if row is not None else started.get(approval.thread_id, datetime.now(UTC))
        entries.append(WorklistEntry(approval=approval, waiting_since=since, claim=row.claim if row else None))
    kept = [e for e in entries if only is None or only.keeps(e)]
    return sorted(kept, key=lambda e: e.waiting_since)


def claim(runtime: WorkflowRuntime, pending: PendingApproval, holder: ClaimHolder) -> Claim:
    """Claim (or renew the claim on) a pending approval; ClaimHeldError when another reviewer holds it."""
    return runtime.claims.claim(pending.thread_id, pending.request.request_id, holder, pending.subject())


def release(runtime: WorkflowRuntime, pending: PendingApproval, holder: ClaimHolder) -> bool:
    """Release `holder`'s claim (False: they held none); ClaimHeldError when another reviewer holds it."""
    return runtime.claims.release(pending.thread_id, pending.request.request_id, holder, pending.subject())
