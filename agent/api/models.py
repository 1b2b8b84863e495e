"""Request and response bodies of the API: pydantic at the boundary."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from graphs.runtime import Job, PendingApproval, RunReport
from tools.review.edits import MAX_EDITS, MaskEdit


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
    reason: str | None = Field(default=None, description="required for a rejection: what is wrong")
    edits: list[MaskEdit] = Field(
        default_factory=list,
        max_length=MAX_EDITS,
        description="with 'modify': brush strokes and slice-range erasures (tools/review/edits.py); the job "
        "rebuilds the results from the corrected masks and asks for approval again",
    )


class BatchJobBody(BaseModel):
    kind: Literal["batch"]
    query: str | None = Field(default=None, description="work-list search, e.g. 'status=registered&modality=CT'")
    engine: str | None = None


class StudyJobBody(BaseModel):
    kind: Literal["study"]
    imaging_study_id: str = Field(min_length=1)
    engine: str | None = None


JobBody = Annotated[BatchJobBody | StudyJobBody, Field(discriminator="kind")]


class ApprovalView(BaseModel):
    approval_id: str
    job_id: str
    request: dict

    @classmethod
    def of(cls, pending: PendingApproval) -> ApprovalView:
        return cls(approval_id=pending.interrupt_id, job_id=pending.thread_id, request=pending.request.model_dump(mode="json"))


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
