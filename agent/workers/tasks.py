"""The tasks a worker runs: start-study, start-batch (the batch's fan-out) and resume on the `studies`
queue, and a job's segmentation on the `engines` queue (tools/workflow/engine_jobs.py).

Each task is one call into the runtime (graphs/runtime.py), which holds the job's lease while it
runs, so a message delivered twice never runs a job twice at once: a copy that finds the job held
by a live runner elsewhere comes back after `job_lease_heartbeat_s` (a Celery retry) and then
either finds the job finished or waiting (nothing to do) or takes over from a runner that died.
A job with a checkpoint continues from it and never starts over. A task that cannot reach the
state database is retried with backoff rather than acknowledged as failed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from celery import Celery, Task
from celery.signals import worker_process_shutdown, worker_shutdown

from agent.parts import engine_catalog
from agent.runtime import AgentRuntime
from agent.settings import Settings
from agent.telemetry import flush_traces
from agent.workers.celery_app import RESUME, SEGMENT, START_BATCH, START_STUDY
from agent.workers.queue import CeleryJobQueue
from graphs.runtime import JobNotStartedError, ProgressHandler, RunReport
from tools.segmentation.catalog import EngineCatalog
from tools.state.database import unreachable_errors
from tools.workflow.engine_jobs import run_engine_request
from tools.workflow.leases import JobBusyError

log = logging.getLogger(__name__)

T = TypeVar("T")

DATABASE_UNREACHABLE = unreachable_errors()


class PerProcess(Generic[T]):
    """One object per pool process, built on its first task: database pools, lease heartbeat threads
    and loaded models do not survive the pool's fork, so the parent never builds one."""

    def __init__(self, build: Callable[[], T], close: Callable[[T], None]) -> None:
        self._build = build
        self._close = close
        self._value: T | None = None
        self._pid: int | None = None

    def get(self) -> T:
        if self._value is None or self._pid != os.getpid():
            self._value = self._build()
            self._pid = os.getpid()
        return self._value

    def close(self) -> None:
        if self._value is not None and self._pid == os.getpid():
            self._close(self._value)
        self._value = None


def progress_logger(thread_id: str) -> ProgressHandler:
    """Each stage of a study as one log line: which worker ran what is in its own log (ids only, no PHI)."""

    def on_progress(event: dict[str, Any]) -> None:
        if "stage" in event:
            log.info("job %s: study %s %s", thread_id, event.get("imaging_study_id"), event["stage"])

    return on_progress


def _describe(report: RunReport) -> str:
    if report.done:
        return "done: " + ", ".join(f"{o['imaging_study_id']} {o['outcome']}" for o in report.outcomes)
    if report.pending:
        return f"waiting for {len(report.pending)} approval(s)"
    if report.waiting_engine:
        return "segmentation queued for the engine workers; this worker is free meanwhile"
    return "stopped before its end; a resume continues it"


def register_tasks(app: Celery, settings: Settings) -> PerProcess[AgentRuntime]:
    """Register the job tasks and the engine task on `app` (the worker's); their runtime and engines are
    built per pool process, each on its first task (a worker of the `engines` queue opens no database)."""
    runtimes = PerProcess(lambda: AgentRuntime(settings, queue=CeleryJobQueue(app)), AgentRuntime.close)
    engines: PerProcess[EngineCatalog] = PerProcess(lambda: engine_catalog(settings), lambda _catalog: None)
    jobs = CeleryJobQueue(app)
    retry_after_s = settings.job_lease_heartbeat_s

    def run(task: Task, thread_id: str, call: Callable[[AgentRuntime], str]) -> None:
        try:
            log.info("job %s: %s", thread_id, call(runtimes.get()))
        except JobBusyError as exc:
            log.info("job %s: %s; looking again in %.0f s", thread_id, exc.holder.describe(), retry_after_s)
            raise task.retry(countdown=retry_after_s) from exc
        except JobNotStartedError as exc:
            log.info("%s", exc)

    options: dict[str, Any] = {
        "bind": True,
        # This app's tasks only (Celery shares decorated tasks with every app made later by default).
        "shared": False,
        # A copy waits as long as a live runner holds its job, and a job waits out a database outage.
        "max_retries": None,
        # The state database restarting or out of reach: the job goes on from its last checkpoint once
        # it is back (exponential backoff up to a minute), instead of being acknowledged as failed.
        "autoretry_for": DATABASE_UNREACHABLE,
        "retry_backoff": 2,
        "retry_backoff_max": 60,
    }

    @app.task(name=START_STUDY, **options)
    def start_study(self: Task, thread_id: str, imaging_study_id: str, engine: str) -> None:
        initial = {"imaging_study_id": imaging_study_id, "engine": engine}
        run(self, thread_id, lambda rt: _describe(rt.run_queued(thread_id, initial, progress_logger(thread_id))))

    @app.task(name=START_BATCH, **options)
    def start_batch(self: Task, thread_id: str, query: Mapping[str, str] | None, engine: str) -> None:
        run(self, thread_id, lambda rt: f"dispatched {len(rt.dispatch_batch(thread_id, query, engine))} study job(s)")

    @app.task(name=RESUME, **options)
    def resume(self: Task, thread_id: str) -> None:
        run(self, thread_id, lambda rt: _describe(rt.run_queued(thread_id, None, progress_logger(thread_id))))

    # No database behind it, so no retries for one: a pool process that dies gives the message back
    # (acks_late, reject_on_worker_lost), a dead machine's goes to another engine worker after the
    # visibility timeout, and a repeated request is answered from the result already written.
    @app.task(name=SEGMENT, bind=True, shared=False)
    def segment(self: Task, thread_id: str, request_path: str) -> None:
        worker = str(self.request.hostname or "unknown")
        log.info("job %s: segmentation on engine worker %s", thread_id, worker)
        result = run_engine_request(engines.get(), Path(request_path), worker)
        log.info("job %s: segmentation %s in %.1f s; resume queued", thread_id, "failed" if result.error else "done",
                 result.seconds)
        jobs.resume(thread_id)

    def close(**_: object) -> None:
        runtimes.close()
        engines.close()
        flush_traces()  # the batch processor's last spans, before the pool process exits

    worker_process_shutdown.connect(close, weak=False)
    worker_shutdown.connect(close, weak=False)
    return runtimes
