"""The workflow graphs against the real Orthanc and FHIR server: approve, reject, no write without approval,
on both state backends (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.parts import fhir_client
from agent.runtime import AgentRuntime
from agent.seed import seed_datasets, seed_folder
from agent.settings import Settings
from tests.identities import signed_decision
from tests.integration.listings import assessment_instances, fhir_listing, pacs_listing, result_series
from tools.fhir.task import task_token
from tools.imaging.volume import read_series_dir
from tools.phantom import PhantomSpec, make_phantom, write_phantom
from tools.workflow.approval import ApprovalDecision, PendingDicomWrite

pytestmark = pytest.mark.integration

WORKFLOW_PHANTOM = PhantomSpec(
    slices=60, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0, seed=7, patient_id="WF-0007"
)


def _seed_phantom(settings: Settings, tmp_path: Path, spec: PhantomSpec) -> str:
    write_phantom(make_phantom(spec), tmp_path / spec.patient_id)
    [seeded] = seed_datasets(settings, read_series_dir(tmp_path / spec.patient_id))
    return seeded.imaging_study_id


def _approve(reviewer: str = "dr-approver") -> ApprovalDecision:
    return signed_decision(action="approve", reviewer_id=reviewer, reviewer_name="Dr. Approver")


@pytest.fixture()
def runtime(state_settings: Settings) -> Iterator[AgentRuntime]:
    """The runtime on each state backend in turn (tests/integration/conftest.py `state_settings`): the
    phantom workflow tests run on the SQLite file and on PostgreSQL, checkpoints and tables alike."""
    with AgentRuntime(state_settings) as rt:
        yield rt


@pytest.fixture()
def sqlite_runtime(settings: Settings) -> Iterator[AgentRuntime]:
    """The default SQLite state only: for the shared LIDC study, which one run leaves rejected."""
    with AgentRuntime(settings) as rt:
        yield rt


def _spec(seed: int, runtime: AgentRuntime) -> PhantomSpec:
    """The workflow phantom with a study and patient of each backend's run's own (both runs share the PACS)."""
    backend = "pg" if runtime.settings.database_url is not None else "sq"
    offset = 100 if backend == "pg" else 0
    return WORKFLOW_PHANTOM.model_copy(update={"seed": seed + offset, "patient_id": f"WF-{seed:04d}-{backend}"})


@pytest.mark.realdata
def test_batch_approve_one_reject_other(
    live_settings: Settings, sqlite_runtime: AgentRuntime, tmp_path: Path, shared_data: Path
) -> None:
    runtime = sqlite_runtime
    phantom_id = _seed_phantom(live_settings, tmp_path, WORKFLOW_PHANTOM)
    [lidc] = seed_folder(live_settings, shared_data / "lidc-idri-0001" / "dicom")
    query = {"status": "registered", "modality": "CT"}

    report = runtime.start_batch(query)
    by_study = {p.request.imaging_study_id: p for p in report.pending}
    assert {phantom_id, lidc.imaging_study_id} <= set(by_study)
    request = by_study[phantom_id].request
    assert [w.kind for w in request.dicom_writes] == ["RTSTRUCT", "SEG", "SR"]
    assert all(len(w.sha256) == 64 for w in request.dicom_writes)
    assert {c.resource_type for c in request.fhir_changes} >= {"ImagingStudy", "DiagnosticReport", "Observation"}
    assert [s.key for s in request.structures] == ["left-lung", "right-lung"]
    assert request.patient_id == "WF-0007" and request.previews

    decisions = {by_study[phantom_id].interrupt_id: _approve()}
    decisions[by_study[lidc.imaging_study_id].interrupt_id] = signed_decision(
        action="reject", reviewer_id="dr-approver", reviewer_name="Dr. Approver", reason="contour leaks into the hilum"
    )
    for pending in report.pending:
        if pending.request.imaging_study_id not in (phantom_id, lidc.imaging_study_id):
            decisions[pending.interrupt_id] = signed_decision(
                action="reject", reviewer_id="dr-approver", reviewer_name="Dr. Approver", reason="not part of this test"
            )
    final = runtime.decide(report.thread_id, decisions)
    assert final.done
    outcomes = {o["imaging_study_id"]: o["outcome"] for o in final.outcomes}
    assert outcomes[phantom_id] == "completed" and outcomes[lidc.imaging_study_id] == "rejected"

    phantom_uid = request.study_instance_uid
    assert sorted(result_series(live_settings, phantom_uid)) == ["RTSTRUCT", "SEG", "SR"]
    assert result_series(live_settings, lidc.study_instance_uid) == []

    with fhir_client(live_settings) as fhir:
        study = fhir.read("ImagingStudy", phantom_id)
        assert study.status == "available"
        assert {s.modality.code for s in study.series} == {"CT", "RTSTRUCT", "SEG", "SR"}
        [report_resource] = fhir.search("DiagnosticReport", {"subject": study.subject.reference})
        assert report_resource.status == "final"
        assert report_resource.imagingStudy[0].reference == f"ImagingStudy/{phantom_id}"
        observations = [fhir.read("Observation", r.reference.split("/")[1]) for r in report_resource.result]
        assert sorted(o.bodySite.coding[0].code for o in observations) == ["3341006", "44029006"]
        assert all(o.valueQuantity.code == "mL" and o.valueQuantity.value > 100 for o in observations)
        assert all(o.derivedFrom[0].reference == f"ImagingStudy/{phantom_id}" for o in observations)
        provenances = [
            p for p in fhir.search("Provenance", {}) if any(t.reference == f"DiagnosticReport/{report_resource.id}" for t in p.target)
        ]
        assert len(provenances) == 1
        agents = [a.who.reference for a in provenances[0].agent]
        reviewer = fhir.read("Practitioner", agents[1].split("/")[1])
        assert reviewer.identifier[0].value == "dr-approver"
        [task] = fhir.search("Task", {"identifier": task_token(phantom_uid, "lung-threshold")})
        assert task.status == "completed"
        [rejected_task] = fhir.search("Task", {"identifier": task_token(lidc.study_instance_uid, "lung-threshold")})
        assert rejected_task.status == "rejected"
        assert rejected_task.statusReason.text == "contour leaks into the hilum"
        assert fhir.read("ImagingStudy", lidc.imaging_study_id).status == "registered"


def test_no_write_without_approval(live_settings: Settings, runtime: AgentRuntime, tmp_path: Path) -> None:
    spec = _spec(8, runtime)
    study_id = _seed_phantom(live_settings, tmp_path, spec)
    pacs_before, fhir_before = pacs_listing(live_settings), fhir_listing(live_settings, exclude=("Task",))

    report = runtime.start_study(study_id)
    assert len(report.pending) == 1 and not report.done

    assert pacs_listing(live_settings) == pacs_before
    assert fhir_listing(live_settings, exclude=("Task",)) == fhir_before
    study_uid = report.pending[0].request.study_instance_uid
    with fhir_client(live_settings) as fhir:
        [task] = fhir.search("Task", {"identifier": task_token(study_uid, "lung-threshold")})
    assert task.status == "in-progress" and not task.output

    # The approval is still pending after the runtime is closed and opened again (durable).
    with AgentRuntime(runtime.settings) as reopened:
        assert [p.interrupt_id for p in reopened.pending_approvals()] == [report.pending[0].interrupt_id]


def test_same_study_twice_writes_nothing_twice(live_settings: Settings, runtime: AgentRuntime, tmp_path: Path) -> None:
    spec = _spec(9, runtime)
    study_id = _seed_phantom(live_settings, tmp_path, spec)
    first = runtime.start_study(study_id)
    first = runtime.decide(first.thread_id, {first.pending[0].interrupt_id: _approve()})
    assert first.outcomes[0]["outcome"] == "completed"
    pacs_after_first, fhir_after_first = pacs_listing(live_settings), fhir_listing(live_settings, exclude=("Task",))

    second = runtime.start_study(study_id)
    # Same UIDs and the same bytes: the rerun rebuilds identical objects, it does not make near-copies.
    assert second.pending[0].request.dicom_writes == _approved_writes(runtime, first.thread_id)
    second = runtime.decide(second.thread_id, {second.pending[0].interrupt_id: _approve()})
    assert second.outcomes[0]["outcome"] == "completed"
    # The results are not written again; the second decision is a second assessment, recorded as such.
    study_uid = _study_uid(runtime, first.thread_id)
    assert len(assessment_instances(live_settings, study_uid)) == 2
    assert len(set(pacs_listing(live_settings)) - set(pacs_after_first)) == 1
    after = fhir_listing(live_settings, exclude=("Task",))
    grown = {k: len(after[k]) - len(fhir_after_first[k]) for k in after if len(after[k]) != len(fhir_after_first[k])}
    assert grown == {"Observation": 1}, grown


def _study_uid(runtime: AgentRuntime, thread_id: str) -> str:
    return runtime.graphs["study"].get_state({"configurable": {"thread_id": thread_id}}).values["study"].study_instance_uid


def _approved_writes(runtime: AgentRuntime, thread_id: str) -> list[PendingDicomWrite]:
    state = runtime.graphs["study"].get_state({"configurable": {"thread_id": thread_id}}).values
    return state["built"].request.dicom_writes


def test_fallback_engine_is_named_in_approval_and_provenance(live_settings: Settings, tmp_path: Path) -> None:
    spec = WORKFLOW_PHANTOM.model_copy(update={"seed": 10, "patient_id": "WF-0010"})
    study_id = _seed_phantom(live_settings, tmp_path, spec)
    settings = live_settings.model_copy(
        update={"run_dir": tmp_path / "run", "default_engine": "monai-bundle", "fallback_engines": ["lung-threshold"]}
    )
    with AgentRuntime(settings) as rt:
        report = rt.start_study(study_id)
        request = report.pending[0].request
        assert request.engine == "lung-threshold"
        assert len(request.engine_fallbacks) == 1 and request.engine_fallbacks[0].startswith("monai-bundle:")
        assert "IMAGING_AGENT_MONAI_BUNDLE_DIR" in request.engine_fallbacks[0]
        final = rt.decide(report.thread_id, {report.pending[0].interrupt_id: _approve()})
    assert final.outcomes[0]["outcome"] == "completed"
    with fhir_client(live_settings) as fhir:
        [report_resource] = fhir.search("DiagnosticReport", {"subject": fhir.read("ImagingStudy", study_id).subject.reference})
        provenance = [
            p for p in fhir.search("Provenance", {})
            if any(t.reference == f"DiagnosticReport/{report_resource.id}" for t in p.target)
        ][0]
    reasons = [r.text for r in provenance.reason or []]
    assert any(text.startswith("Engine not used: monai-bundle") for text in reasons)
    assert provenance.agent[0].who.display == "lung-threshold 1.1.0"


def test_a_rejected_study_is_left_out_of_the_next_batch(live_settings: Settings, runtime: AgentRuntime, tmp_path: Path) -> None:
    spec = _spec(11, runtime)
    study_id = _seed_phantom(live_settings, tmp_path, spec)
    with fhir_client(live_settings) as fhir:
        patient = fhir.read("ImagingStudy", study_id).subject.reference
    query = {"status": "registered", "modality": "CT", "patient": patient}
    first = runtime.start_batch(query)
    [pending] = [p for p in first.pending if p.request.imaging_study_id == study_id]
    decision = signed_decision(action="reject", reviewer_id="dr-a", reviewer_name="Dr. A", reason="base cut off")
    runtime.decide(first.thread_id, {pending.interrupt_id: decision})

    second = runtime.start_batch(query)
    [outcome] = [o for o in second.outcomes if o["imaging_study_id"] == study_id]
    assert outcome["outcome"] == "skipped" and "base cut off" in outcome["detail"]
    assert not [p for p in second.pending if p.request.imaging_study_id == study_id]
    # Asked for on purpose, the study runs again.
    again = runtime.start_study(study_id)
    assert again.pending and again.pending[0].request.imaging_study_id == study_id
