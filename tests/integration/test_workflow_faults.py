"""Faults in the workflow: each study ends with the right Task status and reason, the others go on.

The PACS or FHIR server misbehaves through a small reverse proxy on 127.0.0.1 (FaultProxy in
workflow_helpers) that answers chosen requests with an error, or drops the connection, and
forwards everything else to the session's real Orthanc and FHIR server.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from agent.parts import fhir_client
from agent.runtime import AgentRuntime
from agent.settings import Settings
from tests.conftest import free_port, with_pacs_url
from tests.integration.workflow_helpers import (
    Fault,
    FaultProxy,
    SeededStudy,
    approve,
    assert_nothing_written,
    assert_written_once,
    is_transaction,
    phantom_spec,
    result_instances,
    seed_phantom,
    study_events,
    task_of,
    worklist_of,
)

pytestmark = pytest.mark.integration

_seeds = itertools.count(4301)


def _new_study(
    live_settings: Settings,
    tmp_path: Path,
    patient_id: str,
    studies: list[SeededStudy],
    drop_slice: int | None = None,
    **update: Any,
) -> SeededStudy:
    seed = next(_seeds)
    spec = phantom_spec(seed, patient_id, **update)
    study = seed_phantom(live_settings, tmp_path / f"phantom-{seed}", spec, drop_slice)
    studies.append(study)
    return study


def _failed_reason(settings: Settings, study: SeededStudy) -> str:
    task = task_of(settings, study)
    assert task.status == "failed", f"Task {task.id} is {task.status}"
    assert task.statusReason is not None and task.statusReason.text
    return str(task.statusReason.text)


def _outcomes(report: Any) -> dict[str, dict[str, Any]]:
    return {o["imaging_study_id"]: o for o in report.outcomes}


def test_pacs_down_during_fetch_fails_that_study_and_the_other_goes_on(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    down = _new_study(live_settings, tmp_path, "FLT-PACS-DOWN", seeded)
    fine = _new_study(live_settings, tmp_path, "FLT-PACS-DOWN", seeded)
    # Every request about the first study's images finds the PACS gone (connection closed, no answer).
    dropped = Fault(match=lambda _m, path: down.study_instance_uid in path, status=None)
    with FaultProxy(live_settings.dicomweb_url, [dropped]) as pacs:
        via_proxy = with_pacs_url(settings, f"{pacs.origin}/dicom-web")
        with AgentRuntime(via_proxy) as runtime:
            report = runtime.start_batch(worklist_of(down.patient_reference))
            assert [p.request.imaging_study_id for p in report.pending] == [fine.imaging_study_id]
            reason = _failed_reason(settings, down)
            final = runtime.decide(report.thread_id, {report.pending[0].interrupt_id: approve()})
    assert dropped.hits >= 1
    assert reason.startswith("fetch:") and "PACS" in reason, reason
    outcomes = _outcomes(final)
    assert outcomes[down.imaging_study_id]["outcome"] == "failed"
    assert "PACS" in outcomes[down.imaging_study_id]["detail"]
    assert outcomes[fine.imaging_study_id]["outcome"] == "completed"
    assert final.summary == {"studies": 2, "failed": 1, "completed": 1}
    assert_nothing_written(settings, down)
    assert_written_once(settings, fine)


def test_pacs_not_running_fails_with_a_reason_naming_it(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "FLT-PACS-CLOSED", seeded)
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    with AgentRuntime(settings.model_copy(update={"dicomweb_url": closed})) as runtime:
        report = runtime.start_study(study.imaging_study_id)
    assert report.done and not report.pending
    [outcome] = report.outcomes
    assert outcome["outcome"] == "failed"
    reason = _failed_reason(settings, study)
    assert reason.startswith("fetch:") and "PACS" in reason and "connection refused" in reason, reason
    assert_nothing_written(settings, study)


def test_fhir_500_then_recovering_completes(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "FLT-FHIR-500", seeded)
    # Fewer 500s in a row than the retry policy's attempts (3 in the test settings).
    first_requests = Fault(match=lambda _m, _p: True, status=500, times=2)
    transactions = Fault(match=is_transaction, status=500, times=2)
    with FaultProxy(live_settings.fhir_url, [first_requests, transactions]) as fhir:
        via_proxy = settings.model_copy(update={"fhir_url": f"{fhir.origin}/fhir"})
        with AgentRuntime(via_proxy) as runtime:
            report = runtime.start_study(study.imaging_study_id)
            final = runtime.decide(report.thread_id, {report.pending[0].interrupt_id: approve()})
    assert (first_requests.hits, transactions.hits) == (2, 2)
    assert [o["outcome"] for o in final.outcomes] == ["completed"]
    assert_written_once(settings, study)


def test_imaging_study_changed_while_waiting_for_approval(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """Someone else edits the ImagingStudy between the approval prompt and the answer: the write
    re-reads it and keeps their change (no lost update)."""
    study = _new_study(live_settings, tmp_path, "FLT-CHANGED", seeded)
    with AgentRuntime(settings) as runtime:
        report = runtime.start_study(study.imaging_study_id)
        with fhir_client(settings) as fhir:
            current = fhir.read("ImagingStudy", study.imaging_study_id)
            current.description = "CT CHEST, edited by the front desk"
            fhir.update(current, if_match=current.meta.versionId)
        final = runtime.decide(report.thread_id, {report.pending[0].interrupt_id: approve()})
    assert [o["outcome"] for o in final.outcomes] == ["completed"]
    written = assert_written_once(settings, study)
    assert written.study.description == "CT CHEST, edited by the front desk"


def test_one_412_on_the_transaction_is_retried(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "FLT-412-ONCE", seeded)
    conflict = Fault(match=is_transaction, status=412, times=1)
    with FaultProxy(live_settings.fhir_url, [conflict]) as fhir:
        with AgentRuntime(settings.model_copy(update={"fhir_url": f"{fhir.origin}/fhir"})) as runtime:
            report = runtime.start_study(study.imaging_study_id)
            final = runtime.decide(report.thread_id, {report.pending[0].interrupt_id: approve()})
    assert conflict.hits == 1
    assert [o["outcome"] for o in final.outcomes] == ["completed"]
    assert_written_once(settings, study)


def test_412_every_time_fails_clearly_then_a_later_run_repairs(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "FLT-412-ALWAYS", seeded)
    conflict = Fault(match=is_transaction, status=412)
    with FaultProxy(live_settings.fhir_url, [conflict]) as fhir:
        with AgentRuntime(settings.model_copy(update={"fhir_url": f"{fhir.origin}/fhir"})) as runtime:
            report = runtime.start_study(study.imaging_study_id)
            failed = runtime.decide(report.thread_id, {report.pending[0].interrupt_id: approve("dr-first")})
    assert conflict.hits == 2  # the first try and one retry after re-reading
    [outcome] = failed.outcomes
    assert outcome["outcome"] == "failed" and "write_fhir" in outcome["detail"]
    reason = _failed_reason(settings, study)
    assert f"ImagingStudy/{study.imaging_study_id}" in reason and "run the study again" in reason, reason
    # The PACS half happened, the FHIR half did not: stored objects, no report, still registered.
    stored = result_instances(settings, study.study_instance_uid)
    assert [len(stored.get(m, [])) for m in ("RTSTRUCT", "SEG", "SR")] == [1, 1, 1]
    with fhir_client(settings) as client:
        assert client.read("ImagingStudy", study.imaging_study_id).status == "registered"
        assert client.search("DiagnosticReport", {"subject": study.patient_reference}) == []

    # Later, with the FHIR server behaving: a new run finishes the FHIR part from the approved
    # plan the Task holds, without a new approval and without touching the PACS again.
    events: list[dict[str, Any]] = []
    with AgentRuntime(settings) as runtime:
        repaired = runtime.start_study(study.imaging_study_id, on_progress=events.append)
    assert repaired.done and not repaired.pending
    assert [o["outcome"] for o in repaired.outcomes] == ["completed"]
    assert study_events(events, study.imaging_study_id) == ["start", "write_fhir"]
    written = assert_written_once(settings, study)
    assert result_instances(settings, study.study_instance_uid) == stored
    with fhir_client(settings) as client:
        verifier = next(a for a in written.provenance.agent if a.type.coding[0].code == "verifier")
        reviewer = client.read("Practitioner", verifier.who.reference.split("/")[1])
    assert reviewer.identifier[0].value == "dr-first"


def test_refused_series_fail_with_their_reasons_and_the_good_study_finishes(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    patient = "FLT-REFUSED"
    thick = _new_study(live_settings, tmp_path, patient, seeded, slice_thickness_mm=8.0)
    coarse = _new_study(live_settings, tmp_path, patient, seeded, pixel_spacing_mm=2.0)
    gappy = _new_study(live_settings, tmp_path, patient, seeded, drop_slice=30)
    good = _new_study(live_settings, tmp_path, patient, seeded)
    with AgentRuntime(settings) as runtime:
        report = runtime.start_batch(worklist_of(good.patient_reference))
        assert [p.request.imaging_study_id for p in report.pending] == [good.imaging_study_id]
        final = runtime.decide(report.thread_id, {report.pending[0].interrupt_id: approve()})
    outcomes = _outcomes(final)
    assert outcomes[good.imaging_study_id]["outcome"] == "completed"
    assert_written_once(settings, good)

    expected = {
        # 8 mm slices: no series the lung engine can use (series choice, during fetch).
        thick.imaging_study_id: ("fetch:", "thicker than 5 mm"),
        # 2 mm pixels: the preflight refuses the volume.
        coarse.imaging_study_id: ("preflight:", "pixel spacing 2.00 mm"),
        # one slice missing in the PACS: the volume cannot be assembled.
        gappy.imaging_study_id: ("assemble:", "missing-slices"),
    }
    for study in (thick, coarse, gappy):
        stage, words = expected[study.imaging_study_id]
        assert outcomes[study.imaging_study_id]["outcome"] == "failed"
        reason = _failed_reason(settings, study)
        assert reason.startswith(stage) and words in reason, reason
        assert study.study_instance_uid in reason or "series" in reason
        assert_nothing_written(settings, study)


def test_a_forged_plan_in_the_task_is_not_reused(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """The Task lives in the EHR where others can write: an edited plan must not be written back."""
    study = _new_study(live_settings, tmp_path, "FLT-FORGED", seeded)
    conflict = Fault(match=is_transaction, status=412)
    with FaultProxy(live_settings.fhir_url, [conflict]) as fhir:
        with AgentRuntime(settings.model_copy(update={"fhir_url": f"{fhir.origin}/fhir"})) as runtime:
            report = runtime.start_study(study.imaging_study_id)
            runtime.decide(report.thread_id, {report.pending[0].interrupt_id: approve("dr-first")})
    task = task_of(settings, study)
    recorded = json.loads(task.input[0].valueString)
    recorded["plan"]["conclusion"] = "No abnormality. Discharge."
    task.input[0].valueString = json.dumps(recorded)
    with fhir_client(settings) as client:
        client.update(task, if_match=task.meta.versionId)

    with AgentRuntime(settings) as runtime:
        rerun = runtime.start_study(study.imaging_study_id)
    assert rerun.pending, "a forged plan must lead to a new approval, not to a write"
    with fhir_client(settings) as client:
        assert client.search("DiagnosticReport", {"subject": study.patient_reference}) == []


def test_study_cancelled_after_approval_is_not_reported(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "FLT-CANCELLED", seeded)
    with AgentRuntime(settings) as runtime:
        report = runtime.start_study(study.imaging_study_id)
        with fhir_client(settings) as client:
            current = client.read("ImagingStudy", study.imaging_study_id)
            current.status = "cancelled"
            client.update(current, if_match=current.meta.versionId)
        final = runtime.decide(report.thread_id, {report.pending[0].interrupt_id: approve()})
    [outcome] = final.outcomes
    assert outcome["outcome"] == "failed" and "status is now cancelled" in outcome["detail"]
    with fhir_client(settings) as client:
        assert client.read("ImagingStudy", study.imaging_study_id).status == "cancelled"
        assert client.search("DiagnosticReport", {"subject": study.patient_reference}) == []
