"""The planner's tools: typed LangChain tools over the clients, the study steps and the runtime.

Read tools read (and compute locally). Write tools never write themselves: they start a study
or batch job in the workflow runtime, which stops at the study graph's approval node; the
chat graph then relays that approval to a person. So no tool call, however it was prompted,
reaches the PACS or FHIR without a recorded human decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel

from graphs.planner_tools.history import History
from graphs.planner_tools.history_models import (
    JobRef,
    ListJobsArgs,
    OptionalStudyRef,
    RerunArgs,
    RetryArgs,
)
from graphs.planner_tools.models import (
    ApprovalItem,
    ApprovalList,
    BatchArgs,
    BuiltObject,
    BuiltResults,
    EngineArgs,
    InputCheckResult,
    JobStarted,
    NoArgs,
    PatientItem,
    PatientList,
    ReportText,
    SearchPatientsArgs,
    SearchStudiesArgs,
    SegmentArgs,
    SegmentationSummary,
    SeriesFetched,
    SeriesItem,
    StructureResult,
    StudyDetail,
    StudyList,
    StudyListItem,
    StudyRef,
)
from graphs.planner_tools.operations import Operations, operator_of
from graphs.runtime import PendingApproval, RunReport, WorkflowRuntime
from graphs.study import DEFAULT_TARGETS
from tools.fhir.search_values import escape_value, token
from tools.fhir.worklist import WorklistItem, find_worklist, to_worklist_item
from tools.segmentation.result_store import load_result
from tools.workflow import records
from tools.workflow.records import FetchedSeries, StoredFile, StoredSegmentation

WRITE_TOOLS = frozenset(
    {"run_study_pipeline", "run_batch", "store_results_to_pacs", "update_fhir", "retry_study", "rerun_study"}
)
"""Tools that start a job whose results wait for approval before any PACS or FHIR write."""
OPERATOR_TOOLS = frozenset({"retry_study", "rerun_study", "cancel_job"})
"""Tools that need a signed-in operator (graphs/planner_tools/operations.py)."""
READ_TOOLS = frozenset(
    {"search_imaging_studies", "search_patients", "show_study", "list_pending_approvals", "stored_results",
     "list_jobs", "show_job", "audit_study", "prior_studies"}
)
"""Tools that only read records: no local computation, no state change."""


def _item(w: WorklistItem, free_text: bool) -> StudyListItem:
    return StudyListItem(
        imaging_study_id=w.imaging_study_id,
        study_instance_uid=w.study_instance_uid,
        status=w.status,
        patient_reference=w.patient_reference,
        started=w.started,
        modalities=w.modalities,
        number_of_series=w.number_of_series,
        number_of_instances=w.number_of_instances,
        untrusted_text=w.description if free_text else None,
    )


def _approval_item(p: PendingApproval) -> ApprovalItem:
    return ApprovalItem(
        approval_id=p.interrupt_id,
        job=p.thread_id,
        imaging_study_id=p.request.imaging_study_id,
        structures=[
            StructureResult(key=s.key, display=s.display, volume_ml=s.volume_ml, confidence=s.confidence)
            for s in p.request.structures
        ],
        qa_flags=len(p.request.flags),
    )


def _job(report: RunReport) -> JobStarted:
    return JobStarted(
        job_thread_id=report.thread_id,
        kind=report.kind,
        pending_approvals=[_approval_item(p) for p in report.pending],
        outcomes=[{k: v for k, v in o.items() if k in ("imaging_study_id", "outcome", "detail")} for o in report.outcomes],
        done=report.done,
    )


@dataclass
class _Draft:
    """How far the look-only tools ran the study steps: nothing remote is written."""

    fetched: FetchedSeries
    volume_file: StoredFile | None = None
    segmentation: StoredSegmentation | None = None
    built: records.BuiltResults | None = None


class ToolBox:
    """The tool implementations, bound to one runtime (its workflow's clients and steps, its jobs)."""

    def __init__(self, runtime: WorkflowRuntime, free_text: bool = True) -> None:
        self.runtime = runtime
        # False: descriptions (free text that may name the patient) never reach the model.
        self.free_text = free_text
        self.workflow = runtime.workflow
        self.fhir = runtime.workflow.services.fhir
        self.pacs = runtime.workflow.services.pacs

    # -- reads --------------------------------------------------------------------------
    def search_imaging_studies(self, status: str | None = "registered", modality: str | None = "CT",
                               patient_identifier: str | None = None) -> StudyList:
        # The model's arguments may carry text from the records: each one is one escaped value.
        query = {k: escape_value(v) for k, v in {"status": status, "modality": modality}.items() if v}
        if patient_identifier:
            patients = self.fhir.search("Patient", {"identifier": token(None, patient_identifier)})
            refs = {f"Patient/{p.id}" for p in patients}
            items = [i for i in find_worklist(self.fhir, query) if i.patient_reference in refs]
        else:
            items = find_worklist(self.fhir, query)
        return StudyList(count=len(items), studies=[_item(i, self.free_text) for i in items])

    def search_patients(self, identifier: str) -> PatientList:
        patients = self.fhir.search("Patient", {"identifier": token(None, identifier)})
        return PatientList(
            count=len(patients),
            patients=[
                PatientItem(
                    patient_reference=f"Patient/{p.id}",
                    identifier=p.identifier[0].value if p.identifier else None,
                    gender=p.gender,
                    birth_year=str(p.birthDate)[:4] if p.birthDate else None,
                )
                for p in patients
            ],
        )

    def show_study(self, imaging_study_id: str) -> StudyDetail:
        item = to_worklist_item(self.fhir.read("ImagingStudy", imaging_study_id))
        series: list[SeriesItem] = []
        if item.study_instance_uid:
            series = [
                SeriesItem(
                    series_instance_uid=s.series_instance_uid,
                    modality=s.modality,
                    images=s.number_of_instances,
                    slice_thickness_mm=s.slice_thickness_mm,
                    untrusted_text=s.series_description if self.free_text else None,
                )
                for s in self.pacs.search_series(item.study_instance_uid)
            ]
        return StudyDetail(study=_item(item, self.free_text), series_in_pacs=series)

    def _draft(
        self, imaging_study_id: str, engine: str | None, targets: list[str] | None, until: Literal["fetch", "segment", "build"]
    ) -> _Draft:
        """Run the study steps locally up to `until`, as "draft" files beside any pending approval's."""
        w = self.workflow
        study = w.read_study(imaging_study_id)
        draft = _Draft(fetched=w.fetch(study))
        if until == "fetch":
            return draft
        draft.volume_file = w.assemble(draft.fetched)
        w.preflight(draft.volume_file)
        draft.segmentation = w.segment(
            draft.volume_file, draft.fetched, engine or w.default_engine, targets or DEFAULT_TARGETS, "draft"
        )
        if until == "build":
            created_at = datetime.now(UTC).replace(microsecond=0).isoformat()
            draft.built = w.build(study, draft.fetched, draft.volume_file, draft.segmentation, created_at, "draft")
        return draft

    def fetch_series(self, imaging_study_id: str) -> SeriesFetched:
        series = self._draft(imaging_study_id, None, None, "fetch").fetched.series
        return SeriesFetched(
            imaging_study_id=imaging_study_id,
            series_instance_uid=series.series_instance_uid,
            images=series.images,
            reason=series.reason,
        )

    def segment(self, imaging_study_id: str, engine: str | None = None, targets: list[str] | None = None) -> SegmentationSummary:
        draft = self._draft(imaging_study_id, engine, targets, "segment")
        assert draft.segmentation is not None
        # The segment step stores the assessed result: volumes and QA flags are read, not recomputed.
        result = load_result(draft.segmentation.path, draft.segmentation.sha256)
        return SegmentationSummary(
            imaging_study_id=imaging_study_id,
            engine=result.engine,
            engine_version=result.engine_version,
            structures=[
                StructureResult(
                    key=s.structure.key,
                    display=s.structure.display,
                    volume_ml=round(s.measurements.volume_ml, 1) if s.measurements else 0.0,
                    confidence=s.confidence,
                )
                for s in result.structures
            ],
            qa_flags=[f.message for f in result.all_flags()],
        )

    def check_input(self, imaging_study_id: str) -> InputCheckResult:
        draft = self._draft(imaging_study_id, None, None, "fetch")
        volume_file = self.workflow.assemble(draft.fetched)
        check = self.workflow.check_input(volume_file, draft.fetched)
        return InputCheckResult(
            imaging_study_id=imaging_study_id,
            series_instance_uid=draft.fetched.series.series_instance_uid,
            modality=draft.fetched.series.modality,
            best=check.best,
            expected=check.expected,
            matches=check.matches,
            probability=check.probabilities[check.best],
            model=f"{check.model} {check.model_version}",
            endpoint=check.endpoint,
        )

    def build_results(self, imaging_study_id: str, engine: str | None = None) -> BuiltResults:
        built = self._draft(imaging_study_id, engine, None, "build").built
        assert built is not None
        return BuiltResults(
            imaging_study_id=imaging_study_id,
            objects=[
                BuiltObject(kind=w.kind, sop_instance_uid=w.sop_instance_uid, sha256=w.sha256, path=w.path)
                for w in built.request.dicom_writes
            ],
        )

    def generate_report(self, imaging_study_id: str, engine: str | None = None) -> ReportText:
        built = self._draft(imaging_study_id, engine, None, "build").built
        assert built is not None
        return ReportText(
            imaging_study_id=imaging_study_id, report_text=built.request.report_text, conclusion=built.plan.conclusion
        )

    def list_pending_approvals(self) -> ApprovalList:
        pending = self.runtime.pending_approvals()
        return ApprovalList(count=len(pending), approvals=[_approval_item(p) for p in pending])

    # -- writes (through the approval node) ---------------------------------------------
    def run_study_pipeline(self, imaging_study_id: str, engine: str | None = None) -> JobStarted:
        return _job(self.runtime.start_study(imaging_study_id, engine=engine))

    def run_batch(self, status: str = "registered", modality: str = "CT", engine: str | None = None) -> JobStarted:
        return _job(self.runtime.start_batch({"status": escape_value(status), "modality": escape_value(modality)}, engine=engine))


def _tool(fn: Callable[..., BaseModel], name: str, schema: type[BaseModel], description: str) -> BaseTool:
    def run(**kwargs: Any) -> str:
        return fn(**kwargs).model_dump_json()

    return StructuredTool.from_function(func=run, name=name, description=description, args_schema=schema)


def _operator_tool(fn: Callable[..., BaseModel], name: str, schema: type[BaseModel], description: str,
                   what: str, *, pass_operator: bool = False) -> BaseTool:
    """A tool that runs only for the conversation's signed-in operator (the run config, never the model)."""

    def run(config: RunnableConfig, **kwargs: Any) -> str:
        operator = operator_of(dict(config), what)
        return (fn(operator=operator, **kwargs) if pass_operator else fn(**kwargs)).model_dump_json()

    return StructuredTool.from_function(func=run, name=name, description=description, args_schema=schema)


def build_tools(runtime: WorkflowRuntime, *, free_text: bool = True) -> list[BaseTool]:
    """The planner's tools over `runtime`: read tools, look-only study steps, and job starters.

    `free_text` False leaves every `untrusted_text` field empty (the LLM never sees descriptions)."""
    box = ToolBox(runtime, free_text)
    history = History(runtime)
    operations = Operations(runtime)
    pipeline_note = (
        " Nothing is written when this tool returns: the results wait for a radiologist's approval, "
        "which the system asks for; you cannot approve."
    )
    return [
        _tool(box.search_imaging_studies, "search_imaging_studies", SearchStudiesArgs,
              "Find ImagingStudies in the EHR (FHIR). Default: pending CT studies (status registered). "
              "Returns ids to use with the other tools."),
        _tool(box.search_patients, "search_patients", SearchPatientsArgs,
              "Find a patient by MRN / PatientID. Returns FHIR Patient references (no names)."),
        _tool(box.show_study, "show_study", StudyRef,
              "Show one ImagingStudy: FHIR status and counts, and the series the PACS holds for it."),
        _tool(box.fetch_series, "fetch_series", StudyRef,
              "Choose the study's CT series by rules and download it from the PACS to the local work folder."),
        _tool(box.segment, "segment", SegmentArgs,
              "Segment structures (default both lungs) on the study's CT locally and return volumes and QA "
              "flags. Writes nothing to the PACS or EHR."),
        _tool(box.check_input, "check_input", StudyRef,
              "Check with MedImageInsight (zero-shot) that the study's series is what a goal for it expects "
              "(a chest CT, a frontal chest radiograph). Writes nothing."),
        _tool(box.build_results, "write_rtstruct_seg_sr", EngineArgs,
              "Build the RTSTRUCT, DICOM SEG and SR for the study locally (drafts with their sha256). Does "
              "not store them."),
        _tool(box.generate_report, "generate_report", EngineArgs,
              "Generate the text report (volumes, QA findings, conclusion) for the study. Does not store it."),
        _tool(box.list_pending_approvals, "list_pending_approvals", NoArgs,
              "List results waiting for a radiologist's approval."),
        _tool(box.run_study_pipeline, "run_study_pipeline", EngineArgs,
              "Run the full pipeline for one study: fetch, segment, build RTSTRUCT/SEG/SR and report, then "
              "store in the PACS and update FHIR after approval." + pipeline_note),
        _tool(box.run_study_pipeline, "store_results_to_pacs", EngineArgs,
              "Store the study's contour results (RTSTRUCT, SEG, SR) in the PACS. Runs the study pipeline, "
              "whose FHIR report is written with the same approval." + pipeline_note),
        _tool(box.run_study_pipeline, "update_fhir", EngineArgs,
              "Report the study's results in FHIR (DiagnosticReport, Observations, ImagingStudy available, "
              "Provenance). Runs the study pipeline, whose PACS objects are stored with the same approval."
              + pipeline_note),
        _tool(box.run_batch, "run_batch", BatchArgs,
              "Run the pipeline for every study on the work list (default: pending CT)." + pipeline_note),
        _tool(history.stored_results, "stored_results", OptionalStudyRef,
              "The stored results of a study (default: the most recently processed one): its DiagnosticReport, "
              "the lung volumes in its Observations, the result series in the PACS, who approved them and when. "
              "Reads the records: use it for volumes of processed studies instead of segmenting again."),
        _tool(history.list_jobs, "list_jobs", ListJobsArgs,
              "List workflow jobs, newest first, with each study's outcome (failures with their reason) and the "
              "approvals they wait for."),
        _tool(history.show_job, "show_job", JobRef,
              "One job: the steps it ran, where it stopped, its failures with reasons, and what waits for whom."),
        _tool(history.audit_study, "audit_study", StudyRef,
              "The audit chain of a study: each stored result object, its sha256, the source instances it came "
              "from, who approved it and when, and where it was stored."),
        _tool(history.prior_studies, "prior_studies", StudyRef,
              "The same patient's earlier studies with their stored lung volumes and the change since each."),
        _operator_tool(lambda imaging_study_id: _job(operations.retry_study(imaging_study_id)),
                       "retry_study", RetryArgs,
                       "Operator action: run a study whose last job failed again. Needs a signed-in operator."
                       + pipeline_note, "retry a study"),
        _operator_tool(lambda imaging_study_id, engine: _job(operations.rerun_study(imaging_study_id, engine)),
                       "rerun_study", RerunArgs,
                       "Operator action: run a study again with another segmentation engine. Needs a signed-in "
                       "operator." + pipeline_note, "re-run a study"),
        _operator_tool(operations.cancel_job, "cancel_job", JobRef,
                       "Operator action: cancel a job that waits (for an approval or a worker); nothing of it is "
                       "written. Needs a signed-in operator. Only when the user asks to cancel a job.",
                       "cancel a job", pass_operator=True),
    ]
