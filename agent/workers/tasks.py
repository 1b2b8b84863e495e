"""The tasks a worker runs: start-study, start-batch (the batch's fan-out) and resume.

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
from typing import Any

import psycopg
import sqlalchemy.exc
from celery import Celery, Task
from celery.signals import worker_process_shutdown, worker_shutdown
from psycopg_pool import PoolTimeout

from agent.runtime import AgentRuntime
from agent.settings import Settings
from agent.telemetry import flush_traces
from agent.workers.celery_app import RESUME, START_BATCH, START_STUDY
from agent.workers.queue import CeleryJobQueue
from graphs.runtime import JobNotStartedError, ProgressHandler, RunReport
from tools.state.database import StateDatabaseError
from tools.workflow.leases import JobBusyError

log = logging.getLogger(__name__)

DATABASE_UNREACHABLE = (StateDatabaseError, sqlalchemy.exc.OperationalError, psycopg.OperationalError, PoolTimeout)


class ProcessRuntime:
    """One AgentRuntime per pool process, built on its first task: database pools and lease heartbeat
    threads do not survive the pool's fork, so the parent never builds one."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self.app = app
        self._runtime: AgentRuntime | None = None
        self._pid: int | None = None

    def get(self) -> AgentRuntime:
        if self._runtime is None or self._pid != os.getpid():
            self._runtime = AgentRuntime(self.settings, queue=CeleryJobQueue(self.app))
            self._pid = os.getpid()
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None and self._pid == os.getpid():
            self._runtime.close()
        self._runtime = None


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
    return "stopped before its end; a resume continues it"


def register_tasks(app: Celery, settings: Settings) -> ProcessRuntime:
    """Register the job tasks on `app` (the worker's); their runtime is built per pool process."""
    runtimes = ProcessRuntime(settings, app)
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

    def close(**_: object) -> None:
        runtimes.close()
        flush_traces()  # the batch processor's last spans, before the pool process exits

    worker_process_shutdown.connect(close, weak=False)
    worker_shutdown.connect(close, weak=False)
    return runtimes
