"""The runtime runs a job only under its lease (graphs/runtime.py over tools/workflow/leases.py).

The fake workflow of the routing tests, with the real decision store and a real database (SQLite and
PostgreSQL): a live runner elsewhere is a `sleep` process holding the lease; a decision given while
a runner holds the job is recorded, not run here, and that runner applies it.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from sqlalchemy import Engine

from graphs.runtime import WorkflowRuntime
from tests.unit.test_study_routing import PREPARE, FakeWorkflow, _decision
from tools.workflow.approval import ApprovalDecision, ApprovalRequest
from tools.workflow.decisions import DecisionStore, request_sha256
from tools.workflow.engine_jobs import SegmentationQueued
from tools.workflow.leases import JobBusyError, LeaseStore, this_process
from tools.workflow.records import FetchedSeries, StoredFile, StoredSegmentation

pytestmark = pytest.mark.unit

WRITES = ["record_approval", "store", "record_lineage", "record_assessment", "report"]


@dataclass(frozen=True)
class _Services:
    decisions: DecisionStore


class LeasedFake(FakeWorkflow):
    """The routing fake over a real decision store; `hold` keeps a study in `segment` until released;
    `on_engines`: studies whose first `segment` goes to engine workers (SegmentationQueued)."""

    def __init__(self, decisions: DecisionStore, hold: Sequence[str] = (), on_engines: Sequence[str] = ()) -> None:
        super().__init__()
        self.services = _Services(decisions)
        self.hold = {study: threading.Event() for study in hold}
        self.on_engines = set(on_engines)

    def recorded_decision(self, thread_id: str | None, request: ApprovalRequest) -> ApprovalDecision | None:
        return self.services.decisions.get(thread_id or "", request.request_id, request_sha256(request))

    def segment(
        self, volume_file: StoredFile, fetched: FetchedSeries, engine: str, targets: Sequence[str], variant: str,
        thread_id: str | None = None,
    ) -> StoredSegmentation:
        study = fetched.work_dir.name
        if study in self.hold:
            assert self.hold[study].wait(30), "the test never released the held study"
        if study in self.on_engines and thread_id is not None:
            self.on_engines.discard(study)
            self.calls.append(("segment", study))
            raise SegmentationQueued(thread_id, fetched.work_dir / "request.json")
        return super().segment(volume_file, fetched, engine, targets, variant, thread_id)


@pytest.fixture()
def decisions(database: Engine) -> DecisionStore:
    return DecisionStore(database)


def _runtime(fake: LeasedFake, database: Engine) -> WorkflowRuntime:
    return WorkflowRuntime(fake, engine=database, batch_concurrency=2)  # type: ignore[arg-type]


@pytest.fixture()
def other_runner() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()


def _held_by(database: Engine, pid: int, thread_id: str) -> None:
    """Leave the job's lease held by `pid` on this host, as that runner's own runtime would."""
    LeaseStore(database, expiry_s=60, heartbeat_s=10, identity=replace(this_process(), pid=pid, pid_started=None)).acquire(thread_id)


def test_a_job_a_live_process_runs_is_neither_resumed_nor_decided_here(
    database: Engine, decisions: DecisionStore, other_runner: subprocess.Popen[bytes]
) -> None:
    fake = LeasedFake(decisions)
    with _runtime(fake, database) as runtime:
        [pending] = runtime.start_study("s-1").pending
        _held_by(database, other_runner.pid, pending.thread_id)
        assert runtime.runner(pending.thread_id).pid == other_runner.pid  # type: ignore[union-attr]

        with pytest.raises(JobBusyError, match=f"is being run by pid {other_runner.pid} on host .*; wait for it or stop"):
            runtime.resume(pending.thread_id)
        report = runtime.decide(pending.thread_id, {pending.interrupt_id: _decision()})
        # Recorded, not run here: no write, and the approval is no longer open.
        assert fake.steps() == PREPARE
        assert report.running_elsewhere and f"pid {other_runner.pid}" in report.running_elsewhere
        assert report.running_elsewhere.startswith("the decision is recorded")
        assert not report.pending and not report.done and runtime.pending_approvals() == []

        # That runner is killed before it applied it: the next resume takes over and applies it.
        other_runner.kill()
        other_runner.wait()
        final = runtime.resume(pending.thread_id)
    assert final.done and [o["outcome"] for o in final.outcomes] == ["completed"]
    assert fake.steps() == [*PREPARE, *WRITES]


def test_a_decision_from_another_terminal_is_applied_by_the_running_owner(database: Engine, decisions: DecisionStore) -> None:
    """The batch runs here (s-2 still segmenting) when s-1 is approved from a second runtime."""
    fake = LeasedFake(decisions, hold=["s-2"])
    owner = _runtime(fake, database)
    finished: dict[str, Any] = {}
    run = threading.Thread(target=lambda: finished.update(report=owner.start_batch()))
    run.start()
    try:
        with _runtime(LeasedFake(decisions), database) as terminal:
            deadline = time.monotonic() + 30
            while not terminal.pending_approvals():
                assert time.monotonic() < deadline, "s-1 never reached its approval"
                time.sleep(0.05)
            [pending] = terminal.pending_approvals()
            assert pending.request.imaging_study_id == "s-1"
            report = terminal.decide(pending.thread_id, {pending.interrupt_id: _decision()})
            assert report.running_elsewhere and "which applies it" in report.running_elsewhere
            fake.hold["s-2"].set()
            run.join(60)
            assert not run.is_alive()
            # The owner applied the decision it found recorded; only s-2 waits now.
            owner_report = finished["report"]
            assert [p.request.imaging_study_id for p in owner_report.pending] == ["s-2"]
            assert fake.steps("s-1")[-1] == "report" and fake.steps("s-2")[-1] == "build"
            assert terminal.runner(pending.thread_id) is None
    finally:
        fake.hold["s-2"].set()
        run.join(60)
        owner.close()


def test_the_lease_is_released_when_the_run_returns_or_fails(database: Engine, decisions: DecisionStore) -> None:
    fake = LeasedFake(decisions)
    with _runtime(fake, database) as runtime:
        report = runtime.start_study("s-1")
        assert runtime.last_runner(report.thread_id) is None
        fake.fail_at = "store"
        runtime.decide(report.thread_id, {report.pending[0].interrupt_id: _decision()})
        assert runtime.last_runner(report.thread_id) is None

        def broken_display(event: dict[str, Any]) -> None:
            raise RuntimeError("the terminal went away")

        with pytest.raises(RuntimeError, match="terminal went away"):
            runtime.start_study("s-2", on_progress=broken_display)
        [job] = [j for j in runtime.jobs() if j.label == "ImagingStudy/s-2"]
        assert runtime.last_runner(job.thread_id) is None
