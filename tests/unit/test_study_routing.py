"""The study and batch graphs' routing, with a fake workflow: no PACS, no FHIR, no engine.

The graphs only route, report progress and interrupt; every step is the injected workflow's. So a
fake that records its calls (and fails where told) shows which path the graph takes: approval
before any write, a rejection or failure writes nothing, the repair path skips to the FHIR report,
a recorded decision is not asked again, and the batch keeps going past a failed study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from graphs.batch import build_batch_graph
from graphs.study import build_study_graph, outcome_of
from tests.identities import principal, signed_decision
from tools.fhir.worklist import WorklistItem
from tools.imaging.series_choice import ChosenSeries
from tools.results.fhir_report import WritebackPlan
from tools.review.edits import EraseRange
from tools.workflow.approval import ApprovalDecision, ApprovalRequest, PendingDicomWrite
from tools.workflow.records import (
    ApprovedPlan,
    BuiltResults,
    DicomPatient,
    FetchedSeries,
    StoredFile,
    StoredSegmentation,
    StudyOutcome,
    StudyRecord,
    TaskRecord,
)

pytestmark = pytest.mark.unit

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def _plan(study_id: str) -> WritebackPlan:
    return WritebackPlan(
        result_uid=f"2.25.{abs(hash(study_id)) % 10**8}",
        imaging_study_id=study_id,
        imaging_study_version="1",
        study_instance_uid=STUDY_UID,
        patient_reference="Patient/p-1",
        engine="lung-threshold",
        engine_version="1",
        structures=[],
        objects=[],
        conclusion="none",
        report_text="report",
    )


def _request(plan: WritebackPlan) -> ApprovalRequest:
    return ApprovalRequest(
        request_id=plan.result_uid,
        imaging_study_id=plan.imaging_study_id,
        study_instance_uid=STUDY_UID,
        patient_id="P-1",
        patient_display_name=None,
        study_date=None,
        study_description=None,
        series=ChosenSeries(series_instance_uid="1.2.3", description=None, images=60, slice_thickness_mm=2.5, reason="r"),
        engine="lung-threshold",
        engine_version="1",
        structures=[],
        flags=[],
        previews=[],
        report_text="report",
        dicom_writes=[],
        fhir_changes=[],
    )


def _write(result_uid: str) -> PendingDicomWrite:
    return PendingDicomWrite(
        kind="RTSTRUCT", sop_class_uid="1.2.840.10008.5.1.4.1.1.481.3", sop_class_name="RT Structure Set Storage",
        sop_instance_uid=f"{result_uid}.1", series_instance_uid=f"{result_uid}.2", sha256="3" * 64, size_bytes=1,
        path="/nowhere/rtstruct.dcm",
    )


def _decision(action: str = "approve") -> ApprovalDecision:
    return signed_decision(
        action=action, reviewer_id="dr-lee", reviewer_name="Dr. Lee", reason="wrong side" if action == "reject" else None
    )


class FakeWorkflow:
    """Records each step it is asked to run; raises at `fail_at` (a step name) when told."""

    default_engine = "lung-threshold"

    def __init__(
        self,
        fail_at: str | None = None,
        reusable: bool = False,
        recorded: ApprovalDecision | None = None,
        failing_studies: Sequence[str] = (),
    ) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail_at = fail_at
        self.reusable = reusable
        self.recorded = recorded
        self.failing_studies = set(failing_studies)

    def _call(self, step: str, study_id: str) -> None:
        self.calls.append((step, study_id))
        if step == self.fail_at or (study_id in self.failing_studies and step == "segment"):
            raise RuntimeError(f"{step} broke for {study_id}")

    def steps(self, study_id: str | None = None) -> list[str]:
        return [step for step, sid in self.calls if study_id is None or sid == study_id]

    def select(self, query: Mapping[str, str], engine: str) -> tuple[list[WorklistItem], list[StudyOutcome]]:
        items = [
            WorklistItem(
                imaging_study_id=sid, study_instance_uid=STUDY_UID, status="registered", patient_reference=None,
                started=None, description=None, modalities=["CT"], number_of_series=1, number_of_instances=60,
            )
            for sid in ("s-1", "s-2")
        ]
        skipped = StudyOutcome(imaging_study_id="s-0", study_instance_uid=None, outcome="skipped", detail="x", seconds=0)
        return items, [skipped]

    def read_study(self, imaging_study_id: str) -> StudyRecord:
        self._call("read_study", imaging_study_id)
        return StudyRecord(
            imaging_study_id=imaging_study_id, study_instance_uid=STUDY_UID, status="registered", version="1",
            patient_reference="Patient/p-1", patient_display_name=None, patient_id="P-1", started=None, description=None,
        )

    def open_task(self, study: StudyRecord, engine: str) -> TaskRecord:
        self._call("open_task", study.imaging_study_id)
        reusable = ApprovedPlan(plan=_plan(study.imaging_study_id), decision=_decision()) if self.reusable else None
        return TaskRecord(task_id=f"task-{study.imaging_study_id}", created_at="2026-01-01T00:00:00+00:00", reusable=reusable)

    def fetch(self, study: StudyRecord) -> FetchedSeries:
        self._call("fetch", study.imaging_study_id)
        series = ChosenSeries(series_instance_uid="1.2.3", description=None, images=60, slice_thickness_mm=2.5, reason="r")
        patient = DicomPatient(patient_id="P-1")
        return FetchedSeries(series=series, work_dir=Path(f"/nonexistent/{study.imaging_study_id}"), patient=patient)

    def assemble(self, fetched: FetchedSeries) -> StoredFile:
        self._call("assemble", fetched.work_dir.name)
        return StoredFile(path=fetched.work_dir / "volume.npz", sha256="0" * 64)

    def preflight(self, volume_file: StoredFile) -> None:
        self._call("preflight", volume_file.path.parent.name)

    def segment(
        self, volume_file: StoredFile, fetched: FetchedSeries, engine: str, targets: Sequence[str], variant: str,
        thread_id: str | None = None,
    ) -> StoredSegmentation:
        self._call("segment", fetched.work_dir.name)
        return StoredSegmentation(path=fetched.work_dir / "seg.npz", sha256="1" * 64)

    def build(self, study: StudyRecord, fetched: FetchedSeries, volume_file: StoredFile, segmentation: StoredSegmentation, created_at: str, variant: str) -> BuiltResults:
        self._call("build", study.imaging_study_id)
        plan = _plan(study.imaging_study_id)
        if "edit" in segmentation.path.name:  # a corrected result is a new result, with its own UID
            plan = plan.model_copy(update={"result_uid": plan.result_uid + ".9"})
        request = _request(plan).model_copy(update={"dicom_writes": [_write(plan.result_uid)]})
        return BuiltResults(request=request, plan=plan)

    def apply_edits(
        self, volume_file: StoredFile, segmentation: StoredSegmentation, request: ApprovalRequest, decision: ApprovalDecision
    ) -> StoredSegmentation:
        self._call("apply_edits", request.imaging_study_id)
        return StoredSegmentation(path=segmentation.path.with_name("seg-edit-1.npz"), sha256="2" * 64)

    def recorded_decision(self, thread_id: str | None, request: ApprovalRequest) -> ApprovalDecision | None:
        return self.recorded

    def record_approval(self, task_id: str, approved: ApprovedPlan) -> None:
        self._call("record_approval", approved.plan.imaging_study_id)

    def store(self, study_instance_uid: str, writes: Sequence[Any]) -> list[str]:
        self._call("store", study_instance_uid)
        return ["2.25.1"]

    def record_lineage(
        self, study_instance_uid: str, task_id: str, fetched: FetchedSeries, writes: Sequence[Any],
        decision: ApprovalDecision,
    ) -> None:
        self._call("record_lineage", study_instance_uid)

    def record_assessment(
        self, study_instance_uid: str, task_id: str, writes: Sequence[Any], decision: ApprovalDecision,
        corrected: Sequence[Any] = (),
    ) -> str:
        self._call("record_assessment", study_instance_uid)
        self.assessed = ([w.sop_instance_uid for w in writes], [w.sop_instance_uid for w in corrected])
        return "2.25.2"

    def report(self, task_id: str, approved: ApprovedPlan) -> str:
        self._call("report", approved.plan.imaging_study_id)
        return "DiagnosticReport/r-1"

    def record_rejection(self, task_id: str, decision: ApprovalDecision) -> None:
        self._call("record_rejection", task_id.removeprefix("task-"))

    def record_failure(self, task_id: str, reason: str) -> None:
        self._call("record_failure", task_id.removeprefix("task-"))

    def record_cancellation(self, task_id: str, reason: str) -> None:
        self._call("record_cancellation", task_id.removeprefix("task-"))


PREPARE = ["read_study", "open_task", "fetch", "assemble", "preflight", "segment", "build"]


def _run(graph: Any, value: Any, thread: str = "t-1") -> Any:
    config = {"configurable": {"thread_id": thread}}
    graph.invoke(value, config)
    return graph.get_state(config)


def test_an_approved_study_is_written_only_after_the_interrupt() -> None:
    fake = FakeWorkflow()
    graph = build_study_graph(fake, InMemorySaver())
    waiting = _run(graph, {"imaging_study_id": "s-1"})
    assert fake.steps() == PREPARE
    assert [i.value["request_id"] for i in waiting.interrupts] == [_plan("s-1").result_uid]

    done = _run(graph, Command(resume=_decision().model_dump(mode="json")))
    assert fake.steps() == [*PREPARE, "record_approval", "store", "record_lineage", "record_assessment", "report"]
    assert outcome_of(done.values)["outcome"] == "completed"
    assert done.values["report_reference"] == "DiagnosticReport/r-1"


def test_edits_rebuild_the_result_and_ask_again_and_the_assessment_says_modified() -> None:
    fake = FakeWorkflow()
    graph = build_study_graph(fake, InMemorySaver())
    _run(graph, {"imaging_study_id": "s-1"})
    edits = [EraseRange(structure="left-lung", plane="axial", first=0, last=2)]
    modify = ApprovalDecision.by(principal("dr-lee", "Dr. Lee"), "modify", edits=edits)
    again = _run(graph, Command(resume=modify.model_dump(mode="json")))
    # Nothing written: the corrected result is built and shown for approval, under a new UID.
    assert fake.steps() == [*PREPARE, "apply_edits", "build"]
    assert [i.value["request_id"] for i in again.interrupts] == [_plan("s-1").result_uid + ".9"]

    done = _run(graph, Command(resume=_decision().model_dump(mode="json")))
    assert fake.steps()[-5:] == ["record_approval", "store", "record_lineage", "record_assessment", "report"]
    assert outcome_of(done.values)["outcome"] == "completed"
    # The assessment is of the AI's own objects, modified into the corrected ones that were stored.
    ai, corrected = f"{_plan('s-1').result_uid}.1", f"{_plan('s-1').result_uid}.9.1"
    assert fake.assessed == ([ai], [corrected])


def test_a_rejection_writes_nothing_and_records_why() -> None:
    fake = FakeWorkflow()
    graph = build_study_graph(fake, InMemorySaver())
    _run(graph, {"imaging_study_id": "s-1"})
    done = _run(graph, Command(resume=_decision("reject").model_dump(mode="json")))
    assert fake.steps() == [*PREPARE, "record_rejection", "record_assessment"]
    assert outcome_of(done.values) == StudyOutcome(
        imaging_study_id="s-1", study_instance_uid=STUDY_UID, outcome="rejected", detail="rejected: wrong side",
        seconds=outcome_of(done.values)["seconds"],
    )


@pytest.mark.parametrize("stage", ["fetch", "assemble", "preflight", "segment", "build"])
def test_a_failing_step_ends_in_record_failure_and_no_approval(stage: str) -> None:
    fake = FakeWorkflow(fail_at=stage)
    state = _run(build_study_graph(fake, InMemorySaver()), {"imaging_study_id": "s-1"})
    assert not state.interrupts
    assert fake.steps() == [*PREPARE[: PREPARE.index(stage) + 1], "record_failure"]
    assert state.values["failed_stage"] == stage
    assert outcome_of(state.values)["detail"] == f"{stage}: {stage} broke for s-1"


def test_a_failure_before_the_task_exists_records_nothing_in_fhir() -> None:
    fake = FakeWorkflow(fail_at="read_study")
    state = _run(build_study_graph(fake, InMemorySaver()), {"imaging_study_id": "s-1"})
    assert fake.steps() == ["read_study"]
    assert outcome_of(state.values)["outcome"] == "failed"


def test_a_plan_approved_earlier_goes_straight_to_the_fhir_report() -> None:
    fake = FakeWorkflow(reusable=True)
    state = _run(build_study_graph(fake, InMemorySaver()), {"imaging_study_id": "s-1"})
    assert not state.interrupts
    assert fake.steps() == ["read_study", "open_task", "report"]
    assert outcome_of(state.values)["outcome"] == "completed"


def test_a_recorded_decision_is_not_asked_again() -> None:
    fake = FakeWorkflow(recorded=_decision())
    state = _run(build_study_graph(fake, InMemorySaver()), {"imaging_study_id": "s-1"})
    assert not state.interrupts
    assert fake.steps() == [*PREPARE, "record_approval", "store", "record_lineage", "record_assessment", "report"]


def test_a_failing_write_after_approval_is_a_failure_not_a_completion() -> None:
    fake = FakeWorkflow(fail_at="store")
    graph = build_study_graph(fake, InMemorySaver())
    _run(graph, {"imaging_study_id": "s-1"})
    state = _run(graph, Command(resume=_decision().model_dump(mode="json")))
    assert fake.steps() == [*PREPARE, "record_approval", "store", "record_failure"]
    assert outcome_of(state.values)["outcome"] == "failed"


def test_the_batch_goes_on_past_a_failed_study_and_counts_every_outcome() -> None:
    fake = FakeWorkflow(failing_studies=["s-2"])
    graph = build_batch_graph(fake, concurrency=1, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "batch-1"}}
    graph.invoke({}, config)
    waiting = graph.get_state(config)
    assert [i.value["imaging_study_id"] for i in waiting.interrupts] == ["s-1"]
    assert "record_failure" in fake.steps("s-2") and "store" not in fake.steps()

    graph.invoke(Command(resume={waiting.interrupts[0].id: _decision().model_dump(mode="json")}), config)
    final = graph.get_state(config).values
    assert final["summary"] == {"studies": 3, "skipped": 1, "failed": 1, "completed": 1}
    assert fake.steps("s-1")[-1] == "report" and ("store", STUDY_UID) in fake.calls


def test_a_job_resumed_from_the_strict_sqlite_checkpoint_gets_its_records_back(tmp_path: Path) -> None:
    """Every record type the study state holds is on the serializer's allowlist (graphs/checkpoints.py)."""
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    from graphs.batch import BatchState
    from graphs.checkpoints import checkpoint_serializer
    from graphs.study import StudyState

    conn = sqlite3.connect(tmp_path / "state.sqlite", check_same_thread=False)
    saver = SqliteSaver(conn, serde=checkpoint_serializer([StudyState, BatchState]))
    fake = FakeWorkflow()
    _run(build_study_graph(fake, saver), {"imaging_study_id": "s-1"})
    # A new graph over the same file, as a later process would build it.
    state = _run(build_study_graph(fake, saver), Command(resume=_decision().model_dump(mode="json")))
    conn.close()
    assert outcome_of(state.values)["outcome"] == "completed"
    assert isinstance(state.values["study"], StudyRecord)
    assert isinstance(state.values["built"].plan, WritebackPlan)
    assert isinstance(state.values["decision"], ApprovalDecision)
