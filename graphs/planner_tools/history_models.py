"""Pydantic arguments and results of the planner's history tools: what was stored, run and approved.

Like `models.py`, results carry identifiers, statuses, volumes and counts — never patient names,
never record free text. Reviewers are named by their principal id (staff, not patients).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from tools.segmentation.catalog import EngineName

READ_NOTE = "read from the stored records; nothing was recomputed or written"


class OptionalStudyRef(BaseModel):
    imaging_study_id: str | None = Field(
        default=None,
        description="FHIR ImagingStudy id as a tool returned it; omit for the most recently processed study",
    )


class ListJobsArgs(BaseModel):
    status: Literal["all", "unfinished", "failed", "waiting-approval", "done"] = Field(
        default="all", description="which jobs: all, unfinished, failed (a study failed), waiting-approval, done"
    )
    limit: int = Field(default=20, ge=1, le=200, description="at most this many, the newest first")


class JobRef(BaseModel):
    job_id: str = Field(description="a job id (thread id) exactly as a tool returned it")


class StoredVolume(BaseModel):
    structure: str
    snomed_code: str | None
    volume_ml: float
    observation_id: str


class ResultSeries(BaseModel):
    modality: str
    series_instance_uid: str
    instances: int | None


class ApprovalRecord(BaseModel):
    kind: str
    sop_instance_uid: str
    approved_by: str = Field(description="the reviewer's principal id")
    automatic: bool = Field(description="True: approved with --yes, nobody reviewed it")
    approved_at: str
    stored_at: str


class StoredResults(BaseModel):
    """A study's results as stored: the FHIR report and volumes, the PACS result series, the approvals."""

    imaging_study_id: str
    study_instance_uid: str | None
    status: str
    patient_reference: str | None
    started: str | None
    diagnostic_report_id: str | None
    report_status: str | None
    volumes: list[StoredVolume]
    result_series: list[ResultSeries]
    approvals: list[ApprovalRecord]
    note: str = READ_NOTE


class OutcomeItem(BaseModel):
    imaging_study_id: str
    outcome: str
    detail: str


class JobItem(BaseModel):
    job_id: str
    kind: str
    label: str
    status: str
    created_at: str
    outcomes: list[OutcomeItem]
    pending_approvals: int


class JobList(BaseModel):
    count: int
    jobs: list[JobItem]


class WaitingItem(BaseModel):
    approval_id: str
    imaging_study_id: str
    waits_for: str = Field(description="who must act next")
    claimed_by: str | None
    waiting_since: str


class JobDetail(BaseModel):
    job: JobItem
    steps: list[str] = Field(description="the job's steps in the order they ran")
    next_steps: list[str]
    failures: list[OutcomeItem]
    waiting: list[WaitingItem]
    note: str = READ_NOTE


class AuditEntry(BaseModel):
    kind: str
    sop_instance_uid: str
    sha256: str
    approved_by: str
    automatic: bool
    approved_at: str
    stored_at: str
    destination: str
    source_instances: int
    source_series: list[str]


class AuditChain(BaseModel):
    imaging_study_id: str
    study_instance_uid: str | None
    entries: list[AuditEntry]
    note: str = READ_NOTE


class VolumeChange(BaseModel):
    structure: str
    prior_ml: float
    current_ml: float
    change_ml: float
    change_percent: float | None


class PriorStudy(BaseModel):
    imaging_study_id: str
    started: str | None
    status: str
    volumes: list[StoredVolume]
    change_since: list[VolumeChange] = Field(description="current minus this study's stored volume, per structure")


class PriorComparison(BaseModel):
    imaging_study_id: str
    patient_reference: str | None
    started: str | None
    current_volumes: list[StoredVolume]
    priors: list[PriorStudy] = Field(description="the patient's earlier studies, the newest first")
    note: str = READ_NOTE


class RerunArgs(BaseModel):
    imaging_study_id: str = Field(description="FHIR ImagingStudy id, exactly as a search returned it; never invent one")
    engine: EngineName = Field(description="the engine to run the study with this time")


class RetryArgs(BaseModel):
    imaging_study_id: str = Field(description="FHIR ImagingStudy id of a study whose last job failed")


class JobCancelled(BaseModel):
    job_id: str
    status: str
    withdrawn_approvals: list[str]
    note: str = "the job is cancelled: nothing of it was written, and it no longer waits for anyone"
