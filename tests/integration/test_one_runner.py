"""Two processes, one job: a job runs in one process at a time (issue 10, item 7).

The first `imaging-agent process` is frozen (SIGSTOP) while it runs the study, so it is alive and
mid-run when the second one starts, whatever the machine's speed. The second must leave the job
to it, naming it, and touch nothing; once the first goes on, the study ends as usual and every
write happens once. A runner that was killed leaves a lease that the next `process` takes over.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from agent.runtime import AgentRuntime
from agent.settings import Settings
from tests.conftest import pacs_env
from tests.integration.test_cli_workflow import CLI, REVIEWER, _cli, _ok
from tests.integration.workflow_helpers import (
    Driver,
    SeededStudy,
    approve,
    assert_nothing_written,
    assert_written_once,
    phantom_spec,
    seed_phantom,
    work_files,
    worklist_of,
)

pytestmark = pytest.mark.integration

_seeds = itertools.count(4701)


def _new_study(
    live_settings: Settings, tmp_path: Path, patient_id: str, studies: list[SeededStudy], **update: int | float
) -> SeededStudy:
    seed = next(_seeds)
    study = seed_phantom(live_settings, tmp_path / f"phantom-{seed}", phantom_spec(seed, patient_id, **update))
    studies.append(study)
    return study


def _jobs(settings: Settings) -> list[tuple[str, str]]:
    if not settings.state_path.exists():
        return []
    with sqlite3.connect(settings.state_path, timeout=30) as conn:
        try:
            return conn.execute("SELECT thread_id, label FROM jobs").fetchall()
        except sqlite3.OperationalError:  # the table is not there yet
            return []


def _start_process(settings: Settings, study: SeededStudy, log_dir: Path) -> subprocess.Popen[str]:
    """`imaging-agent process --study ...` in the background, as _cli runs it (nobody at the prompt)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGING_AGENT_")}
    env.update(
        IMAGING_AGENT_RUN_DIR=str(settings.run_dir),
        **pacs_env(settings),
        IMAGING_AGENT_FHIR_URL=settings.fhir_url,
        IMAGING_AGENT_LOCAL_RADIOLOGISTS=json.dumps([REVIEWER]),
        COLUMNS="200",
    )
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(CLI), "process", "--study", study.imaging_study_id],
        stdin=subprocess.DEVNULL,
        stdout=(log_dir / "first.stdout").open("w"),
        stderr=(log_dir / "first.stderr").open("w"),
        env=env,
        cwd=settings.run_dir,
        text=True,
    )


def _mtimes(run_dir: Path) -> dict[Path, int]:
    return dict(work_files(run_dir)) if (run_dir / "work").exists() else {}


def _settled_mtimes(pid: int, run_dir: Path) -> dict[Path, int]:
    """The work files once the stopped process has really stopped: SIGSTOP is delivered
    asynchronously, and writes already under way in the kernel still land for a moment."""
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, f"pid {pid} did not stop"
        time.sleep(0.05)
    previous = _mtimes(run_dir)
    while True:
        time.sleep(0.5)
        current = _mtimes(run_dir)
        if current == previous:
            return current
        assert time.monotonic() < deadline, "the stopped process's work files kept changing"
        previous = current


def test_a_second_process_leaves_a_live_job_to_its_runner(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "ONE-RUNNER-LIVE", seeded)
    logs = tmp_path / "logs"
    first = _start_process(settings, study, logs)
    try:
        deadline = time.monotonic() + 120
        while not (_jobs(settings) and (settings.run_dir / "work").exists()):
            assert first.poll() is None, (logs / "first.stderr").read_text()[-3000:]
            assert time.monotonic() < deadline, "the first process never started its job"
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # alive and mid-run, holding the job
        [(thread_id, _label)] = _jobs(settings)
        before = _settled_mtimes(first.pid, settings.run_dir)

        second = _cli(settings, "process", "--study", study.imaging_study_id)
        out = _ok(second)
        assert f"job {thread_id} is being run by pid {first.pid} on host " in out, out
        assert "wait for it or stop that process" in out
        assert "Traceback" not in second.stderr and "KeyError" not in second.stderr, second.stderr[-3000:]
        # It ran nothing: no new job, no work file written or rewritten, nothing in the PACS or FHIR.
        assert _jobs(settings) == [(thread_id, f"ImagingStudy/{study.imaging_study_id}")]
        assert _mtimes(settings.run_dir) == before
        assert_nothing_written(settings, study)
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, (logs / "first.stderr").read_text()[-3000:]
    first_out = (logs / "first.stdout").read_text()
    assert "stays pending" in first_out, first_out[-3000:]
    assert "Traceback" not in (logs / "first.stderr").read_text()
    assert_nothing_written(settings, study)

    approved = _ok(_cli(settings, "approvals", "approve", study.imaging_study_id))
    assert "completed" in approved
    assert_written_once(settings, study)


def test_the_job_of_a_killed_process_is_taken_over_by_the_next_process(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "ONE-RUNNER-KILLED", seeded)
    driver = Driver.start(settings, ["study", study.imaging_study_id, "--stop-at", "segment"], tmp_path / "logs")
    driver.wait_for("stopped")
    killed = driver.process.pid
    driver.sigkill()

    out = _ok(_cli(settings, "process", "--study", study.imaging_study_id, answers="y\n"))
    assert f"its runner, pid {killed} on " in out and "is gone" in out, out
    assert "completed" in out
    assert len(_jobs(settings)) == 1
    assert_written_once(settings, study)


def test_an_approval_from_another_terminal_is_left_to_the_running_process(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """A batch runs in one process; its small study waits for approval while the big one is still
    processed. `approvals approve` in a second terminal records the decision, runs nothing, and the
    batch's process writes the approved study when it gets there."""
    small = _new_study(live_settings, tmp_path, "ONE-RUNNER-DECIDE", seeded)
    big = _new_study(live_settings, tmp_path, "ONE-RUNNER-DECIDE", seeded, rows=512, columns=512, pixel_spacing_mm=0.75)
    driver = Driver.start(settings, ["batch", json.dumps(worklist_of(small.patient_reference))], tmp_path / "logs")
    try:
        with AgentRuntime(settings) as runtime:
            deadline = time.monotonic() + 180
            while not (pending := runtime.pending_approvals()):
                assert driver.process.poll() is None, "the batch ended before one study waited"
                assert time.monotonic() < deadline, "no study reached its approval"
                time.sleep(0.05)
            driver.process.send_signal(signal.SIGSTOP)  # alive, the other study still running
            [waiting] = pending
            assert waiting.request.imaging_study_id == small.imaging_study_id, "the big study was first"

            answered = _ok(_cli(settings, "approvals", "approve", small.imaging_study_id))
            assert "the decision is recorded" in answered, answered
            assert f"is being run by pid {driver.process.pid} on host " in answered
            assert_nothing_written(settings, small)
            assert runtime.pending_approvals() == []  # answered: not offered again meanwhile
    finally:
        driver.process.send_signal(signal.SIGCONT)
    returned = driver.finish(timeout_s=300)["returned"]
    # The batch's own process applied the recorded decision: the small study is written, once.
    assert [p["request"]["imaging_study_id"] for p in returned["pending"]] == [big.imaging_study_id]
    assert_written_once(settings, small)
    assert_nothing_written(settings, big)
    with AgentRuntime(settings) as runtime:
        final = runtime.decide(returned["thread_id"], {returned["pending"][0]["interrupt_id"]: approve()})
    assert final.done and sorted(o["outcome"] for o in final.outcomes) == ["completed", "completed"]
    assert_written_once(settings, big)
