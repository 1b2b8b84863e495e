"""SIGKILL at every stage boundary, then resume: nothing redone, nothing lost, nothing written twice.

A driver subprocess (`python -m tests.integration.workflow_helpers`) runs the runtime and prints
each progress event as a JSON line. When the chosen stage is reported it stops itself (SIGSTOP,
so the kill lands at that stage and not a few stages later) and the test kills it with SIGKILL.
A new runtime in the test process then resumes the job, approves, and checks every write per
study: exactly one RTSTRUCT, SEG and SR in the PACS, one DiagnosticReport, one Observation per
structure, one Provenance and AuditEvent, one Task.

LangGraph writes a step's checkpoint while the next step runs, so a kill during stage X may
lose the checkpoint of stage X-1: that stage may run again (harmless, it writes nothing
outside the work folder); anything before it must not.

The kills during the writes and while waiting for approval run on both state backends
(`state_settings`: the SQLite file, and PostgreSQL with LangGraph's PostgresSaver).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.runtime import AgentRuntime
from agent.settings import Settings
from graphs.runtime import RunReport
from tests.integration.workflow_helpers import (
    Driver,
    SeededStudy,
    approve,
    assert_nothing_written,
    assert_written_once,
    phantom_spec,
    seed_phantom,
    study_events,
    task_of,
    work_files,
    worklist_of,
)

pytestmark = pytest.mark.integration

PIPELINE = ["start", "fetch", "assemble", "preflight", "segment", "build", "approval"]
# Which work files each stage writes (paths relative to run_dir/work/<content key>/; the
# segmentation and results names may carry a prefix such as "approval-").
PRODUCED_BY: dict[str, Callable[[Path], bool]] = {
    "fetch": lambda rel: rel.parts[0] == "source",
    "assemble": lambda rel: rel.name == "volume.npz",
    "segment": lambda rel: "segmentation-" in rel.name,
    "build": lambda rel: "results-" in rel.parts[0] or rel.name.endswith("request.json"),
}
_seeds = itertools.count(4101)


def _new_study(
    live_settings: Settings, tmp_path: Path, patient_id: str, studies: list[SeededStudy], **update: Any
) -> SeededStudy:
    seed = next(_seeds)
    study = seed_phantom(live_settings, tmp_path / f"phantom-{seed}", phantom_spec(seed, patient_id, **update))
    studies.append(study)
    return study


def _the_job(runtime: AgentRuntime, kind: str, status: str) -> str:
    [job] = runtime.jobs()
    assert (job.kind, job.status) == (kind, status), job
    return job.thread_id


def _resume(runtime: AgentRuntime, thread_id: str) -> tuple[RunReport, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    return runtime.resume(thread_id, on_progress=events.append), events


def _mtimes(run_dir: Path) -> dict[Path, int]:
    return {path.relative_to(run_dir / "work"): mtime for path, mtime in work_files(run_dir)}


def _approve_all(runtime: AgentRuntime, report: RunReport) -> RunReport:
    return runtime.decide(report.thread_id, {p.interrupt_id: approve() for p in report.pending})


@pytest.mark.parametrize("stage", PIPELINE)
def test_study_killed_at_each_stage(
    stage: str, settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, f"DUR-S-{stage}", seeded)
    driver = Driver.start(settings, ["study", study.imaging_study_id, "--stop-at", stage], tmp_path / "logs")
    driver.wait_for("stopped")
    driver.sigkill()
    assert study_events(driver.events, study.imaging_study_id)[-1] == stage

    with AgentRuntime(settings) as runtime:
        thread_id = _the_job(runtime, "study", "running")
        before = _mtimes(settings.run_dir)
        report, events = _resume(runtime, thread_id)
        assert len(report.pending) == 1 and not report.done
        rerun = study_events(events, study.imaging_study_id)
        may_rerun = PIPELINE[max(0, PIPELINE.index(stage) - 1) :]
        assert set(rerun) <= set(may_rerun), f"killed at {stage}, the resume ran {rerun}"
        after = _mtimes(settings.run_dir)
        for done_stage in PIPELINE[: max(0, PIPELINE.index(stage) - 1)]:
            if done_stage in PRODUCED_BY:
                files = [rel for rel in before if PRODUCED_BY[done_stage](rel.relative_to(rel.parts[0]))]
                assert files, f"no files of {done_stage} in the work folder"
                assert all(after[rel] == before[rel] for rel in files), f"{done_stage} was redone"
        assert_nothing_written(settings, study)
        final = _approve_all(runtime, report)
    assert final.done and [o["outcome"] for o in final.outcomes] == ["completed"]
    assert_written_once(settings, study)


@pytest.mark.parametrize("stage", ["write_pacs", "write_fhir"])
def test_study_killed_during_write(
    stage: str, state_settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    settings = state_settings
    study = _new_study(live_settings, tmp_path, f"DUR-W-{stage}", seeded)
    with AgentRuntime(settings) as runtime:
        thread_id = runtime.start_study(study.imaging_study_id).thread_id
    driver = Driver.start(settings, ["decide", thread_id, "--stop-at", stage], tmp_path / "logs")
    driver.wait_for("stopped")
    driver.sigkill()

    with AgentRuntime(settings) as runtime:
        [job] = runtime.jobs(unfinished_only=True)
        assert job.thread_id == thread_id
        report, events = _resume(runtime, thread_id)
    # The approval was saved before the kill: the resume writes without asking again.
    assert not report.pending and report.done, report
    assert [o["outcome"] for o in report.outcomes] == ["completed"]
    assert set(study_events(events, study.imaging_study_id)) <= {"write_pacs", "write_fhir"}
    written = assert_written_once(settings, study)
    assert any("dr-durable" in (n.text or "") for n in written.task.note or [])
    # A job killed mid-write must say so, or `imaging-agent process` (which resumes only jobs
    # marked running) shows it as waiting for an approval that was already given, and never ends it.
    assert job.status == "running", f"job {thread_id} killed while writing is marked {job.status}"


def test_study_killed_while_waiting_for_approval(
    state_settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    settings = state_settings
    study = _new_study(live_settings, tmp_path, "DUR-S-waiting", seeded)
    driver = Driver.start(settings, ["study", study.imaging_study_id, "--linger"], tmp_path / "logs")
    returned = driver.wait_for("returned")["returned"]
    driver.sigkill()

    with AgentRuntime(settings) as runtime:
        assert _the_job(runtime, "study", "waiting-approval") == returned["thread_id"]
        [pending] = runtime.pending_approvals()
        assert pending.interrupt_id == returned["pending"][0]["interrupt_id"]
        assert_nothing_written(settings, study)
        assert task_of(settings, study).status == "in-progress"
        final = runtime.decide(pending.thread_id, {pending.interrupt_id: approve()})
    assert final.done
    assert_written_once(settings, study)


def test_batch_killed_while_one_study_waits_and_the_other_runs(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """The small study reaches its approval while the bigger one is still being processed."""
    small = _new_study(live_settings, tmp_path, "DUR-B-mixed", seeded)
    big = _new_study(live_settings, tmp_path, "DUR-B-mixed", seeded, rows=512, columns=512, pixel_spacing_mm=0.75)
    query = worklist_of(small.patient_reference)
    driver = Driver.start(settings, ["batch", json.dumps(query), "--stop-at", "approval", "--nth", "0"], tmp_path / "logs")
    stopped = driver.wait_for("stopped")
    driver.sigkill()
    waiting = stopped["imaging_study_id"]
    [running] = [s.imaging_study_id for s in (small, big) if s.imaging_study_id != waiting]
    assert "approval" not in study_events(driver.events, running), "both studies finished before the kill"

    with AgentRuntime(settings) as runtime:
        thread_id = _the_job(runtime, "batch", "running")
        before = _mtimes(settings.run_dir)
        report, events = _resume(runtime, thread_id)
        assert {p.request.imaging_study_id for p in report.pending} == {small.imaging_study_id, big.imaging_study_id}
        # The study that was waiting is not redone: at most its approval is asked again.
        assert set(study_events(events, waiting)) <= {"build", "approval"}
        [pending] = [p for p in report.pending if p.request.imaging_study_id == waiting]
        folder = Path(pending.request.dicom_writes[0].path).relative_to(settings.run_dir / "work").parts[0]
        after = _mtimes(settings.run_dir)
        kept = [rel for rel in before if rel.parts[0] == folder and not PRODUCED_BY["build"](rel.relative_to(folder))]
        assert kept and all(after[rel] == before[rel] for rel in kept)
        # The other one goes on from where it was, not from the start.
        reported = study_events(driver.events, running)
        assert set(study_events(events, running)) <= set(PIPELINE[max(0, PIPELINE.index(reported[-1]) - 1) :])
        for study in (small, big):
            assert_nothing_written(settings, study)
        final = _approve_all(runtime, report)
    assert final.done and sorted(o["outcome"] for o in final.outcomes) == ["completed", "completed"]
    for study in (small, big):
        assert_written_once(settings, study)


def test_batch_killed_while_approvals_pending(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    first = _new_study(live_settings, tmp_path, "DUR-B-pending", seeded)
    second = _new_study(live_settings, tmp_path, "DUR-B-pending", seeded)
    driver = Driver.start(settings, ["batch", json.dumps(worklist_of(first.patient_reference)), "--linger"], tmp_path / "logs")
    returned = driver.wait_for("returned")["returned"]
    assert len(returned["pending"]) == 2
    driver.sigkill()

    with AgentRuntime(settings) as runtime:
        thread_id = _the_job(runtime, "batch", "waiting-approval")
        pending = runtime.pending_approvals()
        assert sorted(p.interrupt_id for p in pending) == sorted(p["interrupt_id"] for p in returned["pending"])
        for study in (first, second):
            assert_nothing_written(settings, study)
            assert task_of(settings, study).status == "in-progress"
        by_study = {p.request.imaging_study_id: p for p in pending}
        # Answered one by one, from a runtime that never saw them being asked.
        after_first = runtime.decide(thread_id, {by_study[first.imaging_study_id].interrupt_id: approve()})
        assert [p.request.imaging_study_id for p in after_first.pending] == [second.imaging_study_id]
        assert_written_once(settings, first)
        assert_nothing_written(settings, second)
        final = runtime.decide(thread_id, {by_study[second.imaging_study_id].interrupt_id: approve()})
    assert final.done
    for study in (first, second):
        assert_written_once(settings, study)


@pytest.mark.parametrize("stage", ["write_pacs", "write_fhir"])
def test_batch_killed_during_write(
    stage: str, settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    first = _new_study(live_settings, tmp_path, f"DUR-B-{stage}", seeded)
    second = _new_study(live_settings, tmp_path, f"DUR-B-{stage}", seeded)
    with AgentRuntime(settings) as runtime:
        started = runtime.start_batch(worklist_of(first.patient_reference))
    assert len(started.pending) == 2
    driver = Driver.start(settings, ["decide", started.thread_id, "--stop-at", stage, "--nth", "0"], tmp_path / "logs")
    driver.wait_for("stopped")
    driver.sigkill()

    with AgentRuntime(settings) as runtime:
        [job] = runtime.jobs(unfinished_only=True)
        report, _events = _resume(runtime, job.thread_id)
    assert report.done and not report.pending, report
    assert sorted(o["outcome"] for o in report.outcomes) == ["completed", "completed"]
    for study in (first, second):
        assert_written_once(settings, study)
    assert job.status == "running", f"job {job.thread_id} killed while writing is marked {job.status}"


def test_batch_one_study_at_a_time_finishes(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """batch_concurrency=1 is a valid setting (ge=1): the batch must still reach its approvals."""
    first = _new_study(live_settings, tmp_path, "DUR-B-serial", seeded)
    _new_study(live_settings, tmp_path, "DUR-B-serial", seeded)
    serial = settings.model_copy(update={"batch_concurrency": 1})
    driver = Driver.start(serial, ["batch", json.dumps(worklist_of(first.patient_reference))], tmp_path / "logs")
    returned = driver.finish(timeout_s=30)["returned"]
    assert len(returned["pending"]) == 2
