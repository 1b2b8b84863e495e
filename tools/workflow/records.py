"""What the study steps hand each other: identifiers, paths and hashes, never arrays.

Each record is what one step learned; the study graph keeps them in its state (checkpointed),
so they hold only small, serialisable values. Arrays live in the work store, named by path and
sha256 (see docs/architecture.md, "Durability").
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from tools.imaging.series_choice import ChosenSeries
from tools.results.fhir_report import WritebackPlan
from tools.workflow.approval import ApprovalDecision, ApprovalRequest

Outcome = Literal["completed", "failed", "rejected", "skipped"]
"""How a study's job ended: results written, a step failed, a reviewer rejected, or the batch left it out."""

Variant = Literal["approval", "draft"]
"""Prefix of the work files: "approval" in the pipeline, "draft" for the chat's look-only tools,
so a draft never overwrites a file whose hash a pending approval holds."""


class StudyRecord(BaseModel):
    """The ImagingStudy and its patient as FHIR holds them when the job starts."""

    imaging_study_id: str
    study_instance_uid: str
    status: str
    version: str | None
    patient_reference: str | None
    patient_display_name: str | None
    patient_id: str | None = Field(description="the Patient's identifier in the configured system")
    patient_issuer: str | None = Field(
        default=None, description="that identifier's assigner (display or identifier value), if FHIR names one"
    )
    started: str | None
    description: str | None


class ApprovedPlan(BaseModel):
    """The write plan and the decision that approved it: what the FHIR Task records at approval."""

    plan: WritebackPlan
    decision: ApprovalDecision


class TaskRecord(BaseModel):
    """The FHIR Task tracking the job, and a plan approved earlier that may be finished without a new review."""

    task_id: str
    created_at: str = Field(description="ISO time; fixes every timestamp of the job's DICOM objects")
    reusable: ApprovedPlan | None = None


class DicomPatient(BaseModel):
    """Who the images say they show (Patient Module, PS3.3 C.7.1.1); the card shows it beside FHIR's."""

    patient_id: str
    issuer: str | None = None
    name: str | None = None


class FetchedSeries(BaseModel):
    """The chosen series, downloaded into its own work folder (named by content), and its checked patient."""

    series: ChosenSeries
    work_dir: Path
    patient: DicomPatient


class StoredFile(BaseModel):
    """An array file in the work store and the sha256 it must still have when read back."""

    path: Path
    sha256: str


class StoredSegmentation(StoredFile):
    engine_fallbacks: list[str] = Field(
        default_factory=list, description="engines tried first, each with why its result was not used"
    )
    engine_errors: list[str] = Field(
        default_factory=list, description="the engines tried first that raised an error (not a failed QA)"
    )


class BuiltResults(BaseModel):
    """The approval request a reviewer sees and the write plan it covers."""

    request: ApprovalRequest
    plan: WritebackPlan


class StudyOutcome(TypedDict):
    """One study's line in a job report."""

    imaging_study_id: str
    study_instance_uid: str | None
    outcome: Outcome
    detail: str
    seconds: float
