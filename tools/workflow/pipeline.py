"""The study steps bound to the services they use: what the study graph and the planner's tools call.

`StudyServices` is built once at the top (agent/parts.py) from the settings and handed down; the
graph never builds a client. `StudyWorkflow` binds the plain step functions of `prepare` and
`write` to those services, so a graph node is one call, and a test can hand the graph a fake
workflow to check its routing without any server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.dicomweb.client import DicomwebClient
from tools.fhir.client import FhirClient
from tools.fhir.worklist import WorklistItem
from tools.imaging.projection import is_projection
from tools.imaging.volume import Volume
from tools.reporting.cxrreportgen import CxrReportGenDrafter
from tools.results.package import OutputFormat
from tools.segmentation.catalog import EngineCatalog
from tools.segmentation.exclusion import Exclusion
from tools.segmentation.input_check import InputCheck, MedImageInsightChecker
from tools.workflow import prepare, write
from tools.workflow.approval import ApprovalDecision, ApprovalRequest, PendingDicomWrite
from tools.workflow.assessment import record_assessment
from tools.workflow.decisions import DecisionStore
from tools.workflow.edit import apply_review_edits
from tools.workflow.engine_jobs import SegmentationQueue, segment_on_queue
from tools.workflow.failure import StudyFailure
from tools.workflow.gtv import find_gtv
from tools.workflow.lineage import LineageStore, source_instances
from tools.workflow.records import (
    ApprovedPlan,
    BuiltResults,
    FetchedSeries,
    StoredFile,
    StoredSegmentation,
    StudyOutcome,
    StudyRecord,
    TaskRecord,
    Variant,
)
from tools.workflow.result_stores import ResultStore
from tools.workflow.segment import engine_chain, targets_for
from tools.workflow.worklist import select_worklist


@dataclass(frozen=True)
class StudyServices:
    """Everything a study job talks to. The clients are long-lived and safe to share between threads."""

    fhir: FhirClient
    pacs: DicomwebClient
    results: ResultStore
    """where approved objects are stored and verified: the same PACS over DICOMweb, or over DIMSE"""
    engines: EngineCatalog
    decisions: DecisionStore
    lineage: LineageStore
    work_root: Path
    default_engine: str
    patient_identifier_system: str
    fallback_engines: tuple[str, ...] = field(default=())
    exclude_gtv: bool = True
    """leave a GTV of the study's RTSTRUCT (in the PACS) out of every structure"""
    optional_formats: tuple[OutputFormat, ...] = field(default=())
    """objects built, approved and stored besides RTSTRUCT, SEG and SR: "overlay", "ko" """
    engine_queue: SegmentationQueue | None = None
    """where a job's segmentation goes when engine workers run it; None: the job's own worker segments"""
    report_drafter: CxrReportGenDrafter | None = None
    """drafts findings for chest radiograph studies (CXRReportGen); None: no drafts"""
    input_checker: MedImageInsightChecker | None = None
    """checks each series is what the goal expects before segmenting (MedImageInsight); None: no check"""
    refuse_unexpected_input: bool = False
    """a series the check finds unexpected fails its study (True) or gets a QA flag (False)"""
    engine_endpoints: Mapping[str, str] = field(default_factory=dict)
    """engine name -> the host of the remote endpoint it calls, named on the card and in the Provenance"""


class StudyWorkflow:
    """The study steps over one set of services; each method is one step of docs/architecture.md's flow."""

    def __init__(self, services: StudyServices) -> None:
        self.services = services

    @property
    def default_engine(self) -> str:
        return self.services.default_engine

    def select(self, query: Mapping[str, str], engine: str) -> tuple[list[WorklistItem], list[StudyOutcome]]:
        return select_worklist(self.services.fhir, query, engine)

    def read_study(self, imaging_study_id: str) -> StudyRecord:
        return prepare.read_study(self.services.fhir, imaging_study_id, self.services.patient_identifier_system)

    def open_task(self, study: StudyRecord, engine: str) -> TaskRecord:
        s = self.services
        return prepare.open_task(s.fhir, s.pacs, s.decisions, study, engine)

    def fetch(self, study: StudyRecord) -> FetchedSeries:
        s = self.services
        return prepare.fetch_series(s.pacs, study, s.work_root, s.patient_identifier_system)

    def assemble(self, fetched: FetchedSeries) -> StoredFile:
        return prepare.assemble_stored(fetched.work_dir)

    def preflight(self, volume_file: StoredFile) -> None:
        prepare.preflight_stored(volume_file)

    def segment(
        self,
        volume_file: StoredFile,
        fetched: FetchedSeries,
        engine: str,
        targets: Sequence[str],
        variant: Variant,
        thread_id: str | None = None,
    ) -> StoredSegmentation:
        """Segment here, or, for a job (`thread_id`) when engine workers are configured, on the engines
        queue: then SegmentationQueued until the engine worker's result is in the work store. The
        chat's look-only drafts (no job) always segment here."""
        chain = engine_chain(engine, self.services.fallback_engines)
        targets = targets_for(fetched.series.modality, targets)
        if self.services.input_checker is not None:
            prepare.check_input(
                self.services.input_checker, volume_file, fetched.work_dir, refuse=self.services.refuse_unexpected_input
            )

        def study_gtv(volume: Volume) -> Exclusion | None:
            # The volume's study is the ImagingStudy's: fetch checked every instance against it.
            # A radiograph has no frame of reference a structure set could share.
            if not self.services.exclude_gtv or is_projection(volume.modality):
                return None
            return find_gtv(self.services.pacs, volume.study_instance_uid, volume)

        queue = self.services.engine_queue
        if queue is not None and thread_id is not None:
            return segment_on_queue(
                queue, thread_id, volume_file, fetched.work_dir, chain, targets, variant, exclusion_for=study_gtv
            )
        return prepare.segment_stored(
            self.services.engines, volume_file, fetched.work_dir, chain, targets, variant, exclusion_for=study_gtv
        )

    def check_input(self, volume_file: StoredFile, fetched: FetchedSeries) -> InputCheck:
        """MedImageInsight's reading of the series (the planner's look-only check); never refuses."""
        if self.services.input_checker is None:
            raise StudyFailure(
                f"series {fetched.series.series_instance_uid} cannot be checked: no MedImageInsight endpoint is "
                "configured. Set IMAGING_AGENT_MEDIMAGEINSIGHT_URL (and _KEY) and IMAGING_AGENT_INPUT_CHECK=flag."
            )
        return prepare.check_input(self.services.input_checker, volume_file, fetched.work_dir, refuse=False)

    def build(
        self,
        study: StudyRecord,
        fetched: FetchedSeries,
        volume_file: StoredFile,
        segmentation: StoredSegmentation,
        created_at: str,
        variant: Variant,
    ) -> BuiltResults:
        s = self.services
        draft = None
        if s.report_drafter is not None and fetched.series.modality in ("CR", "DX"):
            draft = prepare.draft_report(s.report_drafter, s.fhir, study, fetched)
        return prepare.build_results(
            study, fetched, volume_file, segmentation, created_at, variant, s.optional_formats, draft, s.engine_endpoints
        )

    def apply_edits(
        self,
        volume_file: StoredFile,
        segmentation: StoredSegmentation,
        request: ApprovalRequest,
        decision: ApprovalDecision,
    ) -> StoredSegmentation:
        return apply_review_edits(volume_file, segmentation, request, decision)

    def recorded_decision(self, thread_id: str | None, request: ApprovalRequest) -> ApprovalDecision | None:
        return write.recorded_decision(self.services.decisions, thread_id, request)

    def record_approval(self, task_id: str, approved: ApprovedPlan) -> None:
        write.record_approval(self.services.fhir, self.services.decisions, task_id, approved)

    def store(self, study_instance_uid: str, writes: Sequence[PendingDicomWrite]) -> list[str]:
        return write.store_approved(self.services.results, self.services.fhir, study_instance_uid, writes)

    def record_lineage(
        self, study_instance_uid: str, task_id: str, fetched: FetchedSeries, writes: Sequence[PendingDicomWrite],
        decision: ApprovalDecision,
    ) -> None:
        inputs = source_instances(fetched.work_dir / prepare.SOURCE_DIR)
        self.services.lineage.record(study_instance_uid, task_id, writes, inputs, decision, self.services.results.destination)

    def record_assessment(
        self,
        study_instance_uid: str,
        task_id: str,
        writes: Sequence[PendingDicomWrite],
        decision: ApprovalDecision,
        corrected: Sequence[PendingDicomWrite] = (),
    ) -> str:
        return record_assessment(
            self.services.results, self.services.fhir, study_instance_uid, task_id, writes, decision, corrected
        )

    def report(self, task_id: str, approved: ApprovedPlan) -> str:
        return write.report_to_fhir(self.services.fhir, task_id, approved)

    def record_rejection(self, task_id: str, decision: ApprovalDecision) -> None:
        write.record_rejection(self.services.fhir, task_id, decision)

    def record_failure(self, task_id: str, reason: str) -> None:
        write.record_failure(self.services.fhir, task_id, reason)

    def record_cancellation(self, task_id: str, reason: str) -> None:
        write.record_cancellation(self.services.fhir, task_id, reason)
