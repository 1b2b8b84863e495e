"""The workflow runtime built from the settings: what the CLI, the app and Python code open.

    from agent.runtime import AgentRuntime
    from agent.settings import Settings

    with AgentRuntime(Settings()) as runtime:      # run/agent.sqlite, or IMAGING_AGENT_DATABASE_URL
        report = runtime.start_batch()              # stops at the approvals
"""

from __future__ import annotations

from agent.memory import keep_large_blocks_out_of_the_heap
from agent.parts import database, job_queue, study_services
from agent.private_files import protect_run_dir
from agent.settings import Settings
from graphs.runtime import JobQueue, WorkflowRuntime
from tools.workflow.pipeline import StudyWorkflow


class AgentRuntime(WorkflowRuntime):
    """`WorkflowRuntime` over the clients and engines the settings describe; closes them on close."""

    def __init__(self, settings: Settings, queue: JobQueue | None = None) -> None:
        """`queue`: where jobs go instead of running here; by default the workers' when a broker is
        configured (agent/workers/), else none (every job runs in this process)."""
        self.settings = settings
        # Studies run here, a few at a time: without this the C heap keeps freed masks resident.
        keep_large_blocks_out_of_the_heap()
        # Checkpoints and work files are PHI: a 0700 run directory, 0600 files (agent/private_files.py).
        protect_run_dir(settings.run_dir)
        self.engine = database(settings)
        self.services = study_services(settings, self.engine)
        try:
            super().__init__(
                StudyWorkflow(self.services),
                engine=self.engine,
                batch_concurrency=settings.batch_concurrency,
                job_lease_s=settings.job_lease_s,
                job_lease_heartbeat_s=settings.job_lease_heartbeat_s,
                claim_s=settings.claim_minutes * 60,
                queue=queue if queue is not None else job_queue(settings),
            )
        except BaseException:  # the database is unreachable, say: no clients left open behind the error
            self._close_parts()
            raise

    def close(self) -> None:
        super().close()
        self._close_parts()

    def _close_parts(self) -> None:
        self.engine.dispose()
        self.services.fhir.close()
        self.services.pacs.close()
