"""Jobs of the API service: on the workers when a broker is configured, else each on a background
thread of the service.

A request never waits for a batch to segment. With workers, the job is queued (its id is the
answer) and a decision is recorded and its resume queued: whichever worker is free runs it.
Without, the job is opened first (its id, and its lease held by this process, so no other runner
takes it), the id is the answer, and the run goes on in a thread. `GET /api/v1/jobs/{job_id}`
watches it either way. A decision for a job whose run is still going is recorded and applied by
that run (the runtime's leases, graphs/runtime.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from graphs.runtime import OpenedJob, RunReport, WorkflowRuntime
from tools.segmentation.catalog import check_engine_name
from tools.workflow.approval import ApprovalDecision

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(self, runtime: WorkflowRuntime) -> None:
        self.runtime = runtime
        self.errors: dict[str, str] = {}
        self._threads: list[threading.Thread] = []

    def start_batch(self, query: Mapping[str, str] | None, engine: str | None) -> str:
        """The new job's id. Raises UnknownEngineError (a ValueError) before any job exists."""
        self._check_engine(engine)
        if self.runtime.queue is not None:
            return self.runtime.start_batch(query, engine=engine).thread_id
        opened = self.runtime.open_job("batch", self.runtime.batch_label(query))
        self._background(opened, lambda: self.runtime.start_batch(query, engine=engine, opened=opened))
        return opened.thread_id

    def start_study(self, imaging_study_id: str, engine: str | None) -> str:
        """The new job's id. Raises UnknownEngineError (a ValueError) before any job exists."""
        self._check_engine(engine)
        if self.runtime.queue is not None:
            return self.runtime.start_study(imaging_study_id, engine=engine).thread_id
        opened = self.runtime.open_job("study", f"ImagingStudy/{imaging_study_id}")
        self._background(opened, lambda: self.runtime.start_study(imaging_study_id, engine=engine, opened=opened))
        return opened.thread_id

    def _check_engine(self, engine: str | None) -> None:
        # Before the job is opened: a made-up name never gets a job, a lease or a FHIR Task.
        check_engine_name(engine or self.runtime.workflow.default_engine)

    def _background(self, opened: OpenedJob, run: Callable[[], RunReport]) -> None:
        def work() -> None:
            try:
                run()
            except Exception as exc:  # the job's own failure: kept for GET /jobs/{id}, never lost in a thread
                log.exception("job %s stopped with an error", opened.thread_id)
                self.errors[opened.thread_id] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=work, name=f"job-{opened.thread_id}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def decide(self, job_id: str, approval_id: str, decision: ApprovalDecision) -> RunReport:
        return self.runtime.decide(job_id, {approval_id: decision})

    def wait(self, timeout_s: float) -> None:
        """Let running jobs reach a checkpoint before the service stops (used on shutdown)."""
        for thread in self._threads:
            thread.join(timeout_s)
