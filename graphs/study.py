"""The study pipeline: one ImagingStudy from FHIR work list entry to approved, written results.

    start -> fetch -> assemble -> preflight -> segment -> build -> approval -> write_pacs
          -> write_fhir -> END
    (with engine workers, `segment` stops the run with SegmentationQueued until their result is in
     the work store, and runs again from its checkpoint on the resume they queue;
     any stage failing -> record_failure -> END; a rejection -> record_rejection -> END;
     a Task holding an approved plan whose objects are already in the PACS -> write_fhir)

Nodes are thin: each calls one step of `tools.workflow` through the injected workflow object,
reports progress on LangGraph's custom stream and puts the step's record into the state. Each step
is a span (graphs/tracing.py) and a duration in the step histogram (graphs/metrics.py). The only
path to `write_pacs` and `write_fhir` runs through `approval`, whose single `interrupt()` carries
every pending write (docs/architecture.md, "Approval").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypedDict

from langgraph.config import get_config, get_stream_writer
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.types import Checkpointer, interrupt

from graphs.metrics import APPROVAL_WAIT_SECONDS, ENGINE_ERRORS, STEP_SECONDS, WRITES
from graphs.tracing import OUTCOME, failed, step_span
from tools.state.database import unreachable_errors
from tools.workflow.approval import ApprovalDecision, ApprovalRequest, PendingDicomWrite
from tools.workflow.engine_jobs import SegmentationQueued
from tools.workflow.records import (
    ApprovedPlan,
    BuiltResults,
    FetchedSeries,
    Outcome,
    StoredFile,
    StoredSegmentation,
    StudyOutcome,
    StudyRecord,
    TaskRecord,
    Variant,
)
from tools.workflow.segment import NoEngineResultError

log = logging.getLogger(__name__)

DEFAULT_TARGETS = ["lungs"]
STATE_UNREACHABLE = unreachable_errors()


class StudyState(TypedDict, total=False):
    """What the study pipeline knows: the input, one record per step, and how it ended."""

    imaging_study_id: str
    engine: str
    targets: list[str]
    variant: Variant
    study: StudyRecord
    task: TaskRecord
    fetched: FetchedSeries
    volume_file: StoredFile
    segmentation: StoredSegmentation
    built: BuiltResults
    decision: ApprovalDecision
    ai_writes: list[PendingDicomWrite]
    """the AI's own objects, kept at a reviewer's first correction: what the assessment record is about"""
    stored: list[str]
    report_reference: str
    outcome: Outcome
    error: str
    failed_stage: str
    seconds: dict[str, float]
    # When the approval card was ready (epoch seconds): the approval wait is measured from here.
    approval_shown_at: float


class StudySteps(Protocol):
    """The steps the graph runs (tools.workflow.pipeline.StudyWorkflow; a fake in routing tests)."""

    @property
    def default_engine(self) -> str: ...
    def read_study(self, imaging_study_id: str) -> StudyRecord: ...
    def open_task(self, study: StudyRecord, engine: str) -> TaskRecord: ...
    def fetch(self, study: StudyRecord) -> FetchedSeries: ...
    def assemble(self, fetched: FetchedSeries) -> StoredFile: ...
    def preflight(self, volume_file: StoredFile) -> None: ...
    def segment(
        self,
        volume_file: StoredFile,
        fetched: FetchedSeries,
        engine: str,
        targets: Sequence[str],
        variant: Variant,
        thread_id: str | None = None,
    ) -> StoredSegmentation: ...
    def build(
        self,
        study: StudyRecord,
        fetched: FetchedSeries,
        volume_file: StoredFile,
        segmentation: StoredSegmentation,
        created_at: str,
        variant: Variant,
    ) -> BuiltResults: ...
    def recorded_decision(self, thread_id: str | None, request: ApprovalRequest) -> ApprovalDecision | None: ...
    def apply_edits(
        self,
        volume_file: StoredFile,
        segmentation: StoredSegmentation,
        request: ApprovalRequest,
        decision: ApprovalDecision,
    ) -> StoredSegmentation: ...
    def record_approval(self, task_id: str, approved: ApprovedPlan) -> None: ...
    def store(self, study_instance_uid: str, writes: Sequence[PendingDicomWrite]) -> list[str]: ...
    def record_lineage(
        self, study_instance_uid: str, task_id: str, fetched: FetchedSeries, writes: Sequence[PendingDicomWrite],
        decision: ApprovalDecision,
    ) -> None: ...
    def record_assessment(
        self,
        study_instance_uid: str,
        task_id: str,
        writes: Sequence[PendingDicomWrite],
        decision: ApprovalDecision,
        corrected: Sequence[PendingDicomWrite] = (),
    ) -> str: ...
    def report(self, task_id: str, approved: ApprovedPlan) -> str: ...
    def record_rejection(self, task_id: str, decision: ApprovalDecision) -> None: ...
    def record_failure(self, task_id: str, reason: str) -> None: ...


def outcome_of(state: StudyState) -> StudyOutcome:
    """One study's line in a job report, from its final state."""
    outcome = state.get("outcome", "failed")
    if outcome == "completed":
        detail = f"stored {len(state.get('stored', []))} new DICOM object(s); report {state.get('report_reference', '-')}"
    elif outcome == "rejected":
        decision = state.get("decision")
        detail = f"rejected: {decision.reason if decision else ''}"
    else:
        detail = f"{state.get('failed_stage', '?')}: {state.get('error', 'unknown error')}"
    study = state.get("study")
    return StudyOutcome(
        imaging_study_id=state["imaging_study_id"],
        study_instance_uid=study.study_instance_uid if study else None,
        outcome=outcome,
        detail=detail,
        seconds=round(sum(state.get("seconds", {}).values()), 2),
    )


def _progress(study_id: str, stage: str, percent: float, **extra: Any) -> None:
    get_stream_writer()({"imaging_study_id": study_id, "stage": stage, "percent": percent, **extra})


Node = Callable[[StudyState], dict[str, Any]]


def _thread_id() -> str | None:
    return get_config()["configurable"].get("thread_id")


def _step(stage: str, percent: float) -> Callable[[Node], Node]:
    """Progress, timing, a span and failure capture around a node; interrupts pass through untouched."""

    def wrap(fn: Node) -> Node:
        def node(state: StudyState) -> dict[str, Any]:
            study_id = state["imaging_study_id"]
            _progress(study_id, stage, percent)
            with step_span(stage, state, _thread_id()) as span:
                started = time.perf_counter()
                try:
                    update = fn(state)
                except (GraphBubbleUp, SegmentationQueued, *STATE_UNREACHABLE):
                    # A pause, not the study's failure: the job goes on from this step's checkpoint (the
                    # approval's answer; the engine worker's resume; a worker's retry once the state
                    # database is back; `process`).
                    span.set_attribute(OUTCOME, "waiting")
                    raise
                except Exception as exc:  # one study's failure must not stop a batch
                    STEP_SECONDS.labels(stage).observe(time.perf_counter() - started)
                    failed(span, exc)
                    log.warning("study %s failed at %s: %s", study_id, stage, exc)
                    return {"error": str(exc), "failed_stage": stage}
                elapsed = time.perf_counter() - started
                STEP_SECONDS.labels(stage).observe(elapsed)
            seconds = {**state.get("seconds", {}), stage: round(elapsed, 3)}
            return {**update, "seconds": seconds}

        node.__name__ = fn.__name__
        return node

    return wrap


def _count_engine_errors(engines: Sequence[str]) -> None:
    for engine in engines:
        ENGINE_ERRORS.labels(engine).inc()


def _approved(state: StudyState) -> ApprovedPlan:
    """The plan to write: the one just approved, or the one the Task recorded (the repair path)."""
    if "built" in state:
        return ApprovedPlan(plan=state["built"].plan, decision=state["decision"])
    reusable = state["task"].reusable
    if reusable is None:
        raise RuntimeError(f"study {state['imaging_study_id']} reached write_fhir without an approved plan")
    return reusable


def _nodes(steps: StudySteps) -> dict[str, Node]:
    def start(state: StudyState) -> dict[str, Any]:
        engine = state.get("engine") or steps.default_engine
        study = steps.read_study(state["imaging_study_id"])
        return {
            "engine": engine,
            "targets": state.get("targets") or DEFAULT_TARGETS,
            "study": study,
            "task": steps.open_task(study, engine),
        }

    def fetch(state: StudyState) -> dict[str, Any]:
        return {"fetched": steps.fetch(state["study"])}

    def assemble(state: StudyState) -> dict[str, Any]:
        return {"volume_file": steps.assemble(state["fetched"])}

    def preflight(state: StudyState) -> dict[str, Any]:
        steps.preflight(state["volume_file"])
        return {}

    def segment(state: StudyState) -> dict[str, Any]:
        variant = state.get("variant", "approval")
        try:
            # The job's id: with engine workers, the one their result resumes (SegmentationQueued until then).
            segmentation = steps.segment(
                state["volume_file"], state["fetched"], state["engine"], state["targets"], variant, _thread_id()
            )
        except NoEngineResultError as exc:
            _count_engine_errors(exc.engine_errors)
            raise
        _count_engine_errors(segmentation.engine_errors)
        return {"segmentation": segmentation}

    def build(state: StudyState) -> dict[str, Any]:
        built = steps.build(
            state["study"],
            state["fetched"],
            state["volume_file"],
            state["segmentation"],
            state["task"].created_at,
            state.get("variant", "approval"),
        )
        return {"built": built, "approval_shown_at": time.time()}

    def approval(state: StudyState) -> dict[str, Any]:
        """The one interrupt of the study: nothing is written before a human answers it."""
        request = state["built"].request
        decision = steps.recorded_decision(_thread_id(), request) or ApprovalDecision.model_validate(
            interrupt(request.model_dump(mode="json"))
        )
        if "approval_shown_at" in state:  # a study built before this was measured has no start
            APPROVAL_WAIT_SECONDS.observe(max(0.0, decision.decided_at.timestamp() - state["approval_shown_at"]))
        if decision.action == "approve":
            steps.record_approval(state["task"].task_id, ApprovedPlan(plan=state["built"].plan, decision=decision))
        return {"decision": decision}

    def edit(state: StudyState) -> dict[str, Any]:
        """A reviewer's corrections: a new result, built and shown for approval again."""
        request = state["built"].request
        return {
            "segmentation": steps.apply_edits(state["volume_file"], state["segmentation"], request, state["decision"]),
            "ai_writes": state.get("ai_writes") or request.dicom_writes,
        }

    def write_pacs(state: StudyState) -> dict[str, Any]:
        study_uid, writes = state["study"].study_instance_uid, state["built"].request.dicom_writes
        stored = steps.store(study_uid, writes)
        steps.record_lineage(study_uid, state["task"].task_id, state["fetched"], writes, state["decision"])
        # The assessment is of the AI's result: accepted as it was, or modified into what was stored.
        ai_writes = state.get("ai_writes")
        steps.record_assessment(
            study_uid, state["task"].task_id, ai_writes or writes, state["decision"], writes if ai_writes else ()
        )
        WRITES.labels("pacs").inc(len(stored))
        return {"stored": stored}

    def write_fhir(state: StudyState) -> dict[str, Any]:
        reference = steps.report(state["task"].task_id, _approved(state))
        WRITES.labels("fhir").inc()
        return {"report_reference": reference, "outcome": "completed"}

    def record_rejection(state: StudyState) -> dict[str, Any]:
        with step_span("record_rejection", state, _thread_id()):
            steps.record_rejection(state["task"].task_id, state["decision"])
            steps.record_assessment(
                state["study"].study_instance_uid,
                state["task"].task_id,
                state.get("ai_writes") or state["built"].request.dicom_writes,
                state["decision"],
            )
        return {"outcome": "rejected"}

    def record_failure(state: StudyState) -> dict[str, Any]:
        reason = f"{state.get('failed_stage', 'unknown stage')}: {state.get('error', 'unknown error')}"
        task = state.get("task")
        with step_span("record_failure", state, _thread_id()) as span:
            if task is not None:
                try:
                    steps.record_failure(task.task_id, reason)
                except Exception as exc:  # the failure itself is the result; FHIR may be what failed
                    failed(span, exc)
                    log.warning("could not record failure of study %s in FHIR: %s", state["imaging_study_id"], exc)
        _progress(state["imaging_study_id"], "failed", 100.0, error=reason)
        return {"outcome": "failed"}

    return {
        "start": _step("start", 2)(start),
        "fetch": _step("fetch", 10)(fetch),
        "assemble": _step("assemble", 30)(assemble),
        "preflight": _step("preflight", 35)(preflight),
        "segment": _step("segment", 40)(segment),
        "build": _step("build", 70)(build),
        "approval": _step("approval", 85)(approval),
        "edit": _step("edit", 60)(edit),
        "write_pacs": _step("write_pacs", 90)(write_pacs),
        "write_fhir": _step("write_fhir", 95)(write_fhir),
        "record_rejection": record_rejection,
        "record_failure": record_failure,
    }


def _after(stage: str, next_stage: str) -> Callable[[StudyState], str]:
    def route(state: StudyState) -> str:
        return "record_failure" if state.get("error") else next_stage

    route.__name__ = f"after_{stage}"
    return route


def after_start(state: StudyState) -> str:
    if state.get("error"):
        return "record_failure"
    return "write_fhir" if state["task"].reusable is not None else "fetch"


def after_approval(state: StudyState) -> str:
    if state.get("error"):
        return "record_failure"
    action = state["decision"].action
    return {"approve": "write_pacs", "modify": "edit"}.get(action, "record_rejection")


def build_study_graph(steps: StudySteps, checkpointer: Checkpointer = None) -> Any:
    """Compile the study pipeline over `steps`. Pass a checkpointer to run it on its own (approvals need one)."""
    graph = StateGraph(StudyState)
    for name, node in _nodes(steps).items():
        graph.add_node(name, node)
    graph.add_edge(START, "start")
    graph.add_conditional_edges("start", after_start, ["fetch", "write_fhir", "record_failure"])
    for stage, next_stage in [
        ("fetch", "assemble"),
        ("assemble", "preflight"),
        ("preflight", "segment"),
        ("segment", "build"),
        ("build", "approval"),
        ("edit", "build"),
        ("write_pacs", "write_fhir"),
    ]:
        graph.add_conditional_edges(stage, _after(stage, next_stage), [next_stage, "record_failure"])
    graph.add_conditional_edges("approval", after_approval, ["write_pacs", "edit", "record_rejection", "record_failure"])
    graph.add_conditional_edges("write_fhir", _after("write_fhir", END), [END, "record_failure"])
    graph.add_edge("record_rejection", END)
    graph.add_edge("record_failure", END)
    return graph.compile(checkpointer=checkpointer, name="study")
