"""The approval contract: what a radiologist is shown, and what they answer.

One `ApprovalRequest` per study is the payload of the study graph's single `interrupt()`. It
lists every pending write — each DICOM object with its SOP Class, SOP Instance UID and the
sha256 of its bytes, each FHIR change with the patient and ImagingStudy version it targets, the
preview images' sha256 and both identities of the patient (FHIR's and the DICOM headers') — so
what is approved is exactly what gets written (the writer re-hashes every file against this list
before storing it, and what the PACS holds afterwards).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from tools.identity.principal import Principal
from tools.imaging.series_choice import ChosenSeries
from tools.reporting.models import DraftReport
from tools.results.fhir_report import FhirChange, Reviewer
from tools.review.edits import BrushStroke, EraseRange, MaskEdit
from tools.segmentation.base import QAFlag, ResultEdit
from tools.segmentation.input_check import InputCheck
from tools.workflow.rejection_reasons import RejectionReasonCode

SeriesChoice = ChosenSeries
"""The series the pipeline chose and why (the approval card shows it)."""

SOP_CLASS_NAMES = {
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document Storage",
}


class PendingDicomWrite(BaseModel):
    kind: str
    sop_class_uid: str
    sop_class_name: str
    sop_instance_uid: str
    series_instance_uid: str
    sha256: str
    size_bytes: int
    path: str


class StructureForReview(BaseModel):
    key: str
    display: str
    volume_ml: float
    mean_hu: float
    n_components: int
    confidence: float
    area_mm2: float | None = None
    """a radiograph's structure: its projected area; volume and mean HU are then 0 and mean nothing"""

    def size_text(self) -> str:
        return f"{self.area_mm2 / 100:.1f} cm2 projected" if self.area_mm2 is not None else f"{self.volume_ml:.1f} mL"


class ReviewFiles(BaseModel):
    """The series and the masks a card is about, in the work store, with the sha256 each must have.

    The reviewer workstation reads them to show every slice and to apply a reviewer's edits
    (tools/review/edits.py) to exactly the masks the AI produced.
    """

    volume_path: str
    volume_sha256: str
    masks_path: str
    masks_sha256: str


class ApprovalRequest(BaseModel):
    """Everything a radiologist needs to decide on one study."""

    kind: Literal["study-approval"] = "study-approval"
    request_id: str = Field(description="the result UID: one decision per result")
    imaging_study_id: str
    imaging_study_version: str | None = Field(
        default=None, description="the ImagingStudy version read when the results were built (the write plan's target)"
    )
    study_instance_uid: str
    patient_reference: str | None = Field(default=None, description="the FHIR Patient the report is filed under")
    patient_id: str | None = Field(description="FHIR: the Patient's identifier in the configured system")
    patient_display_name: str | None = Field(description="FHIR: the Patient's name")
    dicom_patient_id: str | None = Field(default=None, description="DICOM: PatientID of the segmented series")
    dicom_issuer_of_patient_id: str | None = Field(default=None, description="DICOM: IssuerOfPatientID, if any")
    dicom_patient_name: str | None = Field(default=None, description="DICOM: PatientName of the segmented series")
    study_date: str | None
    study_description: str | None
    series: ChosenSeries
    engine: str
    engine_version: str
    engine_fallbacks: list[str] = Field(
        default_factory=list, description="engines tried first and why their result was not used"
    )
    structures: list[StructureForReview]
    flags: list[QAFlag]
    previews: list[str]
    preview_sha256: dict[str, str] = Field(
        default_factory=dict, description="sha256 of each preview PNG by path: the images the reviewer saw"
    )
    report_text: str
    dicom_writes: list[PendingDicomWrite]
    fhir_changes: list[FhirChange]
    review_files: ReviewFiles | None = Field(
        default=None, description="the volume and masks behind this card, for the full-series viewer"
    )
    edit: ResultEdit | None = Field(
        default=None, description="set when this card shows a reviewer's correction of the AI result"
    )
    engine_endpoint: str | None = Field(
        default=None, description="the host of the remote endpoint the engine called (MedImageParse); None: local"
    )
    input_check: InputCheck | None = Field(
        default=None, description="what MedImageInsight made of the series, against what the goal expects"
    )
    draft: DraftReport | None = Field(
        default=None,
        description="AI-drafted findings with their boxes (a report model, its endpoint, the text sent): preliminary",
    )


class ApprovalDecision(BaseModel):
    """The resume value of the approval interrupt, signed by an authenticated principal.

    Build it with `ApprovalDecision.by(principal, ...)`: the reviewer fields are the principal's
    (id, display name, issuer, when and how they signed in), never text someone typed.
    """

    action: Literal["approve", "reject", "modify"]
    reviewer_id: str = Field(min_length=1, description="the principal's id at its issuer")
    reviewer_name: str = Field(min_length=1, description="the principal's display name")
    issuer: str = Field(min_length=1, description="who vouches for reviewer_id: the FHIR identifier system")
    auth_time: datetime = Field(description="when the principal last signed in")
    auth_method: str = Field(min_length=1, description="password, os-account, oidc, or automatic (`--yes`)")
    reason: str | None = None
    reason_code: RejectionReasonCode | None = Field(
        default=None, description="why a rejection, from the short list (tools/workflow/rejection_reasons.py)"
    )
    automatic: bool = Field(
        default=False, description="approved by `--yes`: no human reviewed the results (Provenance says so)"
    )
    decided_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    edits: list[MaskEdit] = Field(
        default_factory=list,
        description="with action 'modify': the reviewer's corrections, re-applied to the AI masks before a new approval",
    )

    @classmethod
    def by(
        cls,
        principal: Principal,
        action: str,
        reason: str | None = None,
        *,
        automatic: bool = False,
        edits: Sequence[BrushStroke | EraseRange] = (),
        reason_code: str | None = None,
    ) -> ApprovalDecision:
        """The decision of this principal; `automatic` (`--yes`) is recorded as auth method "automatic".

        `edits` go with "modify": the reviewer's corrections to the masks (tools/review/edits.py)."""
        return cls(
            action=action,  # type: ignore[arg-type]  # the validator names a wrong action
            reviewer_id=principal.id,
            reviewer_name=principal.display_name,
            issuer=principal.issuer,
            auth_time=principal.auth_time,
            auth_method="automatic" if automatic else principal.auth_method,
            reason=reason,
            reason_code=reason_code,  # type: ignore[arg-type]  # the Literal names a wrong code
            automatic=automatic,
            edits=list(edits),
        )

    @model_validator(mode="after")
    def _reject_needs_reason(self) -> ApprovalDecision:
        if not self.reviewer_id.strip() or not self.reviewer_name.strip():
            raise ValueError("a decision needs the reviewer's id and name (not blank)")
        if self.reason_code is not None and self.action != "reject":
            raise ValueError(f"a reason code ({self.reason_code}) goes with a rejection only")
        # A code from the list is a reason; "other" says nothing until the reviewer writes what.
        if self.action == "reject" and not (self.reason or "").strip() and self.reason_code in (None, "other"):
            raise ValueError("a rejection needs a reason: choose a reason code or say what is wrong with the contours")
        if self.action == "modify" and not self.edits:
            raise ValueError("a modification needs the edits: paint or erase on a slice first")
        if self.action != "modify" and self.edits:
            raise ValueError(f"edits come with action 'modify', not {self.action!r}: save the edits, then decide")
        if self.action == "modify" and self.automatic:
            raise ValueError("an automatic decision (--yes) cannot edit contours: only a person can")
        return self

    def reviewer(self) -> Reviewer:
        return Reviewer(id=self.reviewer_id, name=self.reviewer_name, system=self.issuer, reviewed=not self.automatic)
