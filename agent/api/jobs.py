"""Jobs of the API service: each run on a background thread, one run per job at a time.

A request never waits for a batch to segment; it gets the job id at once and watches
`GET /api/v1/jobs/{job_id}`. A job's lock keeps a decision from resuming a job whose run is
still going in this service (another process is kept out by the runtime's own rules).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from graphs.runtime import RunReport, WorkflowRuntime
from tools.workflow.approval import ApprovalDecision

log = logging.getLogger(__name__)


class JobBusyError(RuntimeError):
    """The job is running in this service right now."""


class JobRunner:
    def __init__(self, runtime: WorkflowRuntime) -> None:
        self.runtime = runtime
        self.errors: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _lock(self, job_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(job_id, threading.Lock())

    def start_batch(self, query: Mapping[str, str] | None, engine: str | None) -> str:
        job_id = self.runtime.open_job("batch", self.runtime.batch_label(query))
        self._background(job_id, lambda: self.runtime.start_batch(query, engine=engine, thread_id=job_id))
        return job_id

    def start_study(self, imaging_study_id: str, engine: str | None) -> str:
        job_id = self.runtime.open_job("study", f"ImagingStudy/{imaging_study_id}")
        self._background(job_id, lambda: self.runtime.start_study(imaging_study_id, engine=engine, thread_id=job_id))
        return job_id

    def _background(self, job_id: str, run: Callable[[], Any]) -> None:
        lock = self._lock(job_id)
        lock.acquire()  # taken here, so a decision arriving before the thread starts waits its turn

        def work() -> None:
            try:
                run()
            except Exception as exc:  # the job's own failure: kept for GET /jobs/{id}, never lost in a thread
                log.exception("job %s stopped with an error", job_id)
                self.errors[job_id] = f"{type(exc).__name__}: {exc}"
            finally:
                lock.release()

        thread = threading.Thread(target=work, name=f"job-{job_id}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def decide(self, job_id: str, approval_id: str, decision: ApprovalDecision) -> RunReport:
        lock = self._lock(job_id)
        if not lock.acquire(blocking=False):
            raise JobBusyError(f"job {job_id} is running in this service; decide when it waits for approval")
        try:
            return self.runtime.decide(job_id, {approval_id: decision})
        finally:
            lock.release()

    def wait(self, timeout_s: float) -> None:
        """Let running jobs reach a checkpoint before the service stops (used on shutdown)."""
        for thread in self._threads:
            thread.join(timeout_s)
