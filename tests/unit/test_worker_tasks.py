"""What a worker task does with each way its job can refuse to run (agent/workers/tasks.py): a live runner
elsewhere and an unreachable database are retried (no limit), a resume ahead of its start is dropped,
and any other error fails the task. The runtime is a stub; Celery's retry is caught, not sent."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.exc import OperationalError

from agent.settings import Settings
from agent.workers.celery_app import RESUME, START_BATCH, START_STUDY, build_celery_app
from agent.workers.tasks import register_tasks
from graphs.runtime import JobNotStartedError, RunReport
from tools.state.database import StateDatabaseError
from tools.workflow.leases import JobBusyError, LeaseHolder

pytestmark = pytest.mark.unit


class Retried(Exception):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("retry")
        self.kwargs = kwargs


class StubRuntime:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls: list[tuple[Any, ...]] = []

    def run_queued(self, thread_id: str, initial: dict[str, Any] | None, on_progress: Any = None) -> RunReport:
        self.calls.append(("run_queued", thread_id, initial))
        if self.error is not None:
            raise self.error
        return RunReport(thread_id=thread_id, kind="study", done=False, pending=[], outcomes=[])

    def dispatch_batch(self, thread_id: str, query: Any, engine: str) -> list[str]:
        self.calls.append(("dispatch_batch", thread_id, query, engine))
        if self.error is not None:
            raise self.error
        return [f"{thread_id}--s-1"]


def _busy() -> JobBusyError:
    return JobBusyError(LeaseHolder(thread_id="job-1", token="t", pid=1234, host="other", boot_id=None,
                                    pid_started=None, acquired_at=0.0, heartbeat_at=0.0))


@pytest.fixture()
def worker(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    settings = Settings(broker_url=SecretStr("redis://127.0.0.1:1/0"), job_lease_heartbeat_s=3.0, _env_file=None)
    app = build_celery_app(settings)
    runtimes = register_tasks(app, settings)
    for name in (START_STUDY, START_BATCH, RESUME):
        monkeypatch.setattr(app.tasks[name], "retry", lambda **kwargs: Retried(**kwargs))
    return app, runtimes


def _with(monkeypatch: pytest.MonkeyPatch, runtimes: Any, runtime: StubRuntime) -> StubRuntime:
    monkeypatch.setattr(runtimes, "get", lambda: runtime)
    return runtime


def test_each_task_calls_the_runtime_with_ids(worker: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    app, runtimes = worker
    runtime = _with(monkeypatch, runtimes, StubRuntime())
    app.tasks[START_STUDY]("job-1", "img-1", "lung-threshold")
    app.tasks[START_BATCH]("batch-1", {"status": "registered"}, "lung-threshold")
    app.tasks[RESUME]("job-1")
    assert runtime.calls == [
        ("run_queued", "job-1", {"imaging_study_id": "img-1", "engine": "lung-threshold"}),
        ("dispatch_batch", "batch-1", {"status": "registered"}, "lung-threshold"),
        ("run_queued", "job-1", None),
    ]


def test_a_job_held_by_a_live_runner_is_looked_at_again_after_a_heartbeat(
    worker: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, runtimes = worker
    _with(monkeypatch, runtimes, StubRuntime(_busy()))
    for name, args in [(START_STUDY, ("job-1", "img-1", "lung-threshold")), (START_BATCH, ("job-1", None, "lung-threshold")),
                       (RESUME, ("job-1",))]:
        with pytest.raises(Retried) as retried:
            app.tasks[name](*args)
        assert retried.value.kwargs == {"countdown": 3.0}
    assert app.tasks[START_STUDY].max_retries is None


@pytest.mark.parametrize("error", [StateDatabaseError("down"), OperationalError("SELECT 1", {}, Exception("gone"))])
def test_an_unreachable_database_is_waited_out(
    error: Exception, worker: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, runtimes = worker
    _with(monkeypatch, runtimes, StubRuntime(error))
    with pytest.raises(Retried) as retried:
        app.tasks[RESUME]("job-1")
    assert retried.value.kwargs["exc"] is error and 0 <= retried.value.kwargs["countdown"] <= 60


def test_a_resume_ahead_of_its_start_is_dropped_and_other_errors_fail(
    worker: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, runtimes = worker
    _with(monkeypatch, runtimes, StubRuntime(JobNotStartedError("job-1 has not started yet")))
    assert app.tasks[RESUME]("job-1") is None
    _with(monkeypatch, runtimes, StubRuntime(KeyError("no job with thread id job-1")))
    with pytest.raises(KeyError):
        app.tasks[RESUME]("job-1")
