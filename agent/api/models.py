"""Request and response bodies of the API: pydantic at the boundary."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from graphs.approval_worklist import WorklistEntry
from graphs.runtime import Job, RunReport
from tools.review.edits import MAX_EDITS, MaskEdit
from tools.workflow.claims import Claim
from tools.workflow.rejection_reasons import REJECTION_REASONS, RejectionReasonCode


class Credentials(BaseModel):
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)


class AccessToken(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class DecisionBody(BaseModel):
    decision: Literal["approve", "reject", "modify"]
    reason: str | None = Field(
        default=None, description="what is wrong: required for a rejection without a reason code, or with 'other'"
    )
    reason_code: RejectionReasonCode | None = Field(
        default=None, description="why a rejection, from GET /api/v1/rejection-reasons"
    )
    edits: list[MaskEdit] = Field(
        default_factory=list,
        max_length=MAX_EDITS,
        description="with 'modify': brush strokes and slice-range erasures (tools/review/edits.py); the job "
        "rebuilds the results from the corrected masks and asks for approval again",
    )


class RejectionReason(BaseModel):
    code: str
    display: str

    @classmethod
    def all(cls) -> list[RejectionReason]:
        return [cls(code=code, display=display) for code, display in REJECTION_REASONS.items()]


class BatchJobBody(BaseModel):
    kind: Literal["batch"]
    query: str | None = Field(default=None, description="work-list search, e.g. 'status=registered&modality=CT'")
    engine: str | None = None


class StudyJobBody(BaseModel):
    kind: Literal["study"]
    imaging_study_id: str = Field(min_length=1)
    engine: str | None = None


JobBody = Annotated[BatchJobBody | StudyJobBody, Field(discriminator="kind")]


class ClaimView(BaseModel):
    """Who holds an approval, and until when (their claim ends then unless renewed)."""

    holder_id: str
    holder_name: str
    holder_issuer: str
    claimed_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, claim: Claim) -> ClaimView:
        return cls(
            holder_id=claim.holder.id, holder_name=claim.holder.name, holder_issuer=claim.holder.issuer,
            claimed_at=claim.claimed_at, expires_at=claim.expires_at,
        )


class ReleaseView(BaseModel):
    released: bool = Field(description="false when you held no claim on it (nothing changed)")


class ApprovalView(BaseModel):
    approval_id: str
    job_id: str
    imaging_study_id: str
    waiting_since: datetime = Field(description="when the job stopped at this approval")
    waiting_s: float = Field(description="seconds waited so far")
    engine: str
    modality: str
    qa_flags: list[str] = Field(description="the QA flag codes of the result")
    claim: ClaimView | None = Field(description="the reviewer holding it, if any (POST/DELETE .../claim)")
    request: dict

    @classmethod
    def of(cls, entry: WorklistEntry, now: datetime) -> ApprovalView:
        pending = entry.approval
        return cls(
            approval_id=pending.interrupt_id, job_id=pending.thread_id, imaging_study_id=pending.request.imaging_study_id,
            waiting_since=entry.waiting_since, waiting_s=round(entry.waiting_s(now), 1), engine=entry.engine,
            modality=entry.modality, qa_flags=entry.flag_codes, claim=ClaimView.of(entry.claim) if entry.claim else None,
            request=pending.request.model_dump(mode="json"),
        )


class JobView(BaseModel):
    job_id: str
    kind: str
    label: str
    created_at: str
    status: str
    error: str | None = Field(default=None, description="why the job's run stopped with an error in this service")
    report: RunReport | None = None

    @classmethod
    def of(cls, job: Job, error: str | None = None, report: RunReport | None = None) -> JobView:
        return cls(
            job_id=job.thread_id, kind=job.kind, label=job.label, created_at=job.created_at, status=job.status,
            error=error, report=report,
        )
