"""The Python API over the workflow graphs: start, resume, list and answer approvals.

One durable store — the SQLite file in the run directory, or PostgreSQL when configured — holds
LangGraph's checkpoints and the project's tables (jobs, leases, decisions), so the CLI, the Gradio
app and Python code all see the same pending approvals, and a process killed mid-batch resumes
where it stopped.

`WorkflowRuntime` takes its workflow (clients, engines, stores) ready-made; `agent.runtime.AgentRuntime`
builds one from the settings. The README's Python section shows starting a batch and deciding.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from langgraph.config import get_stream_writer
from langgraph.types import Command, Interrupt
from pydantic import BaseModel
from sqlalchemy import Engine

from graphs.batch import BatchState, build_batch_graph
from graphs.checkpoints import checkpoint_saver, checkpoint_serializer
from graphs.study import StudyState, build_study_graph, outcome_of
from graphs.tracing import ENGINE, IMAGING_STUDY_ID, JOB_RUN, job_span
from tools.fhir.worklist import DEFAULT_WORKLIST_QUERY
from tools.segmentation.catalog import check_engine_name
from tools.state.migrate import upgrade
from tools.workflow.approval import ApprovalDecision, ApprovalRequest
from tools.workflow.claims import ClaimHolder, ClaimStore
from tools.workflow.decisions import DecisionConflictError, request_sha256
from tools.workflow.edit import check_review_edits
from tools.workflow.engine_jobs import SegmentationQueued
from tools.workflow.jobs import CANCELLED, WAITING_ENGINE, Job, JobKind, JobStore
from tools.workflow.leases import JobBusyError, Lease, LeaseHolder, LeaseStore
from tools.workflow.pipeline import StudyWorkflow
from tools.workflow.records import StudyOutcome

log = logging.getLogger(__name__)

ProgressHandler = Callable[[dict[str, Any]], None]


class JobQueue(Protocol):
    """Where jobs go when workers run them (agent/workers/): messages carry ids, never records or arrays.

    Each method raises QueueUnavailableError when the message could not be queued."""

    def start_study(self, thread_id: str, imaging_study_id: str, engine: str) -> None: ...

    def start_batch(self, thread_id: str, query: Mapping[str, str] | None, engine: str) -> None: ...

    def resume(self, thread_id: str) -> None: ...

    def depth(self) -> dict[str, int]:
        """Messages waiting in each queue, not yet taken by a worker (for the metrics)."""
        ...


class QueueUnavailableError(RuntimeError):
    """The queue could not take a job or a resume (the broker is down); the message says what to check."""


class JobNotStartedError(RuntimeError):
    """A queued job has no checkpoint yet: only its start message can run it."""


def study_job_of(batch_thread_id: str, imaging_study_id: str) -> str:
    """The thread id of a dispatched batch's study job: the same for a redelivered dispatch, so it adds no second job."""
    return f"{batch_thread_id}--{imaging_study_id}"


class PendingApproval(BaseModel):
    thread_id: str
    interrupt_id: str
    request: ApprovalRequest

    def subject(self) -> str:
        """How messages name it: the study first, then the approval's id."""
        return f"ImagingStudy/{self.request.imaging_study_id} (approval {self.interrupt_id})"


@dataclass(frozen=True)
class OpenedJob:
    """A job created with its lease held, not yet run (`WorkflowRuntime.open_job`)."""

    thread_id: str
    kind: JobKind
    lease: Lease


class RunReport(BaseModel):
    """Where a job stands after a call: finished, waiting for approvals, or still to resume."""

    thread_id: str
    kind: JobKind
    done: bool
    pending: list[PendingApproval]
    outcomes: list[StudyOutcome]
    summary: dict[str, int] | None = None
    # Set when another live runner holds the job: the decisions given here are recorded, and
    # that runner applies them (docs/architecture.md, "Durability").
    running_elsewhere: str | None = None
    # Set when the job (or the decision's resume) went to the workers instead of running here.
    queued: bool = False
    # Set when the run stopped to wait for its segmentation from an engine worker, which queues the resume.
    waiting_engine: bool = False


def _enclosing_stream_writer() -> ProgressHandler | None:
    """When a job runs inside another graph (a chat tool), pass its progress to that graph's stream."""
    try:
        return get_stream_writer()
    except (RuntimeError, KeyError):  # KeyError: inside a runnable's config (a tool called directly), no graph
        return None


class WorkflowRuntime:
    """Owns the checkpointer and the compiled graphs over one workflow (its services are injected).

    `engine` is the runtime's database (SQLite or PostgreSQL, tools/state/database.py): the
    checkpoints, the jobs table and the job leases live there, and so does the workflow's decision
    store, so one database holds everything a restart needs. Opening the runtime brings the
    database's schema up to date (Alembic for the project's tables, LangGraph's own setup for its
    checkpoints). The caller owns the engine and disposes of it after `close`.
    A job runs only while this runtime holds its lease (`tools/workflow/leases.py`): `job_lease_s`
    is how old a heartbeat may get before a runner on another host counts as gone,
    `job_lease_heartbeat_s` how often a running job renews it. A reviewer's claim on a pending
    approval (`tools/workflow/claims.py`) lasts `claim_s`; `decide` refuses a decision on an
    approval another reviewer holds.

    With a `queue` (workers configured), `start_batch`, `start_study`, `decide` and `resume` record
    what they must and put the job on the queue instead of running it; the workers run it through
    `run_queued` and `dispatch_batch`, which always run here.
    """

    def __init__(
        self,
        workflow: StudyWorkflow,
        *,
        engine: Engine,
        batch_concurrency: int,
        job_lease_s: float = 60.0,
        job_lease_heartbeat_s: float = 10.0,
        claim_s: float = 900.0,
        queue: JobQueue | None = None,
    ) -> None:
        self.workflow = workflow
        self.queue = queue
        self.decisions = workflow.services.decisions
        self.batch_concurrency = batch_concurrency
        # The project's tables first: a database that cannot be reached stops here, with a clear
        # StateDatabaseError, before the checkpointer's pool starts trying to connect.
        upgrade(engine)
        self._resources = ExitStack()
        self.checkpointer = self._resources.enter_context(
            checkpoint_saver(engine.url, checkpoint_serializer([StudyState, BatchState]))
        )
        try:
            upgrade(engine, also=self.checkpointer.setup)  # LangGraph's tables, under the same lock
        except BaseException:
            self._resources.close()
            raise
        self._jobs = JobStore(engine)
        self.leases = LeaseStore(engine, expiry_s=job_lease_s, heartbeat_s=job_lease_heartbeat_s)
        self.claims = ClaimStore(engine, claim_s=claim_s)
        self.graphs = {
            "batch": build_batch_graph(workflow, batch_concurrency, self.checkpointer),
            "study": build_study_graph(workflow, self.checkpointer),
        }

    def close(self) -> None:
        self._resources.close()

    def __enter__(self) -> WorkflowRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs -------------------------------------------------------------------------
    def jobs(self, unfinished_only: bool = False) -> list[Job]:
        return self._jobs.list(unfinished_only)

    def job(self, thread_id: str) -> Job:
        for job in self.jobs():
            if job.thread_id == thread_id:
                return job
        raise KeyError(f"no job with thread id {thread_id}; `imaging-agent approvals list` shows the open ones")

    def job_counts(self) -> dict[str, int]:
        """How many jobs are in each status (queued, running, waiting-approval, done, dispatched)."""
        return self._jobs.count_by_status()

    def runner(self, thread_id: str) -> LeaseHolder | None:
        """The live runner (this process or another) running the job now, if any."""
        return self.leases.holder(thread_id)

    def last_runner(self, thread_id: str) -> LeaseHolder | None:
        """The job's lease as left behind, live or not: a killed runner's is what a resume takes over."""
        return self.leases.last_holder(thread_id)

    # -- running ----------------------------------------------------------------------
    def _config(self, thread_id: str) -> dict[str, Any]:
        return {
            "configurable": {"thread_id": thread_id},
            # Threads for the batch's branches; how many studies run at once is the batch's own limit.
            "max_concurrency": max(32, self.batch_concurrency + 1),
            "recursion_limit": 200,
        }

    def _split_interrupts(
        self, thread_id: str, interrupts: Sequence[Interrupt]
    ) -> tuple[list[PendingApproval], dict[str, Any]]:
        """The job's interrupts: those still open, and those whose decision is recorded already (given
        in another terminal while a runner held the job) as a resume value, interrupt id -> decision."""
        pending: list[PendingApproval] = []
        answered: dict[str, Any] = {}
        for item in interrupts:
            request = ApprovalRequest.model_validate(item.value)
            decision = self.decisions.get(thread_id, request.request_id, request_sha256(request))
            if decision is None:
                pending.append(PendingApproval(thread_id=thread_id, interrupt_id=item.id, request=request))
            else:
                answered[item.id] = decision.model_dump(mode="json")
        return pending, answered

    def _recorded_answers(self, kind: JobKind, thread_id: str) -> dict[str, Any]:
        """Recorded decisions the graph has not taken yet (interrupt id -> decision)."""
        return self._split_interrupts(thread_id, self.graphs[kind].get_state(self._config(thread_id)).interrupts)[1]

    def _stream(
        self, lease: Lease, kind: JobKind, thread_id: str, value: Any, on_progress: ProgressHandler | None
    ) -> dict[str, Any]:
        """Run the graph under the held lease until it ends or waits for a decision nobody gave yet.

        Returns the recorded answers the graph did not take (none, unless something is broken)."""
        graph = self.graphs[kind]
        while True:
            # "sync": each step's checkpoint is on disk before the next step runs, so a process killed
            # while writing never forgets an approval it was given (the default writes in the background).
            stream = graph.stream(
                value, self._config(thread_id), stream_mode=["custom"], subgraphs=True, durability="sync"
            )
            with closing(stream):
                for _namespace, mode, chunk in stream:
                    lease.check()
                    if mode == "custom" and on_progress is not None:
                        on_progress(chunk)
            lease.check()
            answers = self._recorded_answers(kind, thread_id)
            if not answers or value == Command(resume=answers):
                return answers
            value = Command(resume=answers)

    def _span_attributes(self, kind: JobKind, thread_id: str, value: Any) -> dict[str, str]:
        """What a run's root span says about its job: ImagingStudy id and engine, from the start's input
        or, for a resume, the job's state (ids and names only, graphs/tracing.py)."""
        starting = isinstance(value, dict)
        values = value if starting else (self.graphs[kind].get_state(self._config(thread_id)).values or {})
        attributes = {JOB_RUN: "start" if starting else "resume"}
        for key, attribute in (("imaging_study_id", IMAGING_STUDY_ID), ("engine", ENGINE)):
            if values.get(key):
                attributes[attribute] = values[key]
        return attributes

    def _run(
        self,
        kind: JobKind,
        thread_id: str,
        value: Any,
        on_progress: ProgressHandler | None,
        lease: Lease | None = None,
    ) -> RunReport:
        """Run the job under its lease (taken here unless given); JobBusyError when a live runner has it."""
        if on_progress is None:
            on_progress = _enclosing_stream_writer()
        with (
            lease or self.leases.acquire(thread_id) as held,
            job_span(kind, thread_id, self._span_attributes(kind, thread_id, value)),
        ):
            # Marked before running: a process killed mid-run leaves "running", which `resume` picks up.
            self._jobs.set_status(thread_id, "running")
            try:
                untaken = self._stream(held, kind, thread_id, value, on_progress)
            except SegmentationQueued as waiting:
                # The worker is free again; the engine worker's resume goes on from the segment step.
                log.info("%s", waiting)
                self._jobs.set_status(thread_id, WAITING_ENGINE)
                return self.report(thread_id).model_copy(update={"waiting_engine": True})
            report = self.report(thread_id)
            self._jobs.set_status(thread_id, "done" if report.done else "waiting-approval" if report.pending else "running")
            for waiting in report.pending:  # the worklist's waiting time counts from here
                self.claims.note_waiting(thread_id, waiting.request.request_id)
        # Released. A decision recorded elsewhere between the last look and the release was left to
        # this runner (its terminal saw it alive), so look once more; a resume with None reruns the
        # approval node, which finds the recorded decision.
        answers = self._recorded_answers(kind, thread_id)
        if not answers or answers == untaken:
            return report
        try:
            return self._run(kind, thread_id, None, on_progress)
        except JobBusyError as exc:  # another runner took the job meanwhile: it applies the decision
            return self.report(thread_id).model_copy(update={"running_elsewhere": str(exc)})

    @staticmethod
    def batch_label(query: Mapping[str, str] | None) -> str:
        """How a batch job is named: its work-list query."""
        return "&".join(f"{k}={v}" for k, v in (query or DEFAULT_WORKLIST_QUERY).items())

    def start_batch(
        self,
        query: Mapping[str, str] | None = None,
        *,
        engine: str | None = None,
        on_progress: ProgressHandler | None = None,
        opened: OpenedJob | None = None,
    ) -> RunReport:
        """Run the batch over the FHIR work list until it finishes or waits for approvals.

        `opened`: the job made by `open_job` beforehand (its id already given out); by default a new one.
        Raises UnknownEngineError (a ValueError) before any job starts when the engine is not in the catalog."""
        initial: dict[str, Any] = {"engine": check_engine_name(engine or self.workflow.default_engine)}
        if query:
            initial["query"] = dict(query)
        if self.queue is not None and opened is None:
            queue = self.queue
            return self._enqueue("batch", self.batch_label(query), lambda t: queue.start_batch(t, query, initial["engine"]))
        return self._start("batch", self.batch_label(query), initial, on_progress, opened)

    def start_study(
        self,
        imaging_study_id: str,
        *,
        engine: str | None = None,
        on_progress: ProgressHandler | None = None,
        opened: OpenedJob | None = None,
    ) -> RunReport:
        """Run the study pipeline for one ImagingStudy until it finishes or waits for approval.

        `opened`: the job made by `open_job` beforehand (its id already given out); by default a new one.
        Raises UnknownEngineError (a ValueError) before any job starts when the engine is not in the catalog."""
        initial = {"imaging_study_id": imaging_study_id, "engine": check_engine_name(engine or self.workflow.default_engine)}
        if self.queue is not None and opened is None:
            queue = self.queue
            return self._enqueue(
                "study", f"ImagingStudy/{imaging_study_id}", lambda t: queue.start_study(t, imaging_study_id, initial["engine"])
            )
        return self._start("study", f"ImagingStudy/{imaging_study_id}", initial, on_progress, opened)

    @staticmethod
    def _new_thread_id(kind: JobKind) -> str:
        return f"{kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"

    def _enqueue(self, kind: JobKind, label: str, send: Callable[[str], None]) -> RunReport:
        """A new job for the workers, status "queued", without a lease (the worker that takes the message
        takes it). A message the broker refuses leaves no job behind that nothing would ever run."""
        thread_id = self._new_thread_id(kind)
        self._jobs.add(thread_id, kind, label, status="queued")
        try:
            send(thread_id)
        except BaseException:
            self._jobs.remove(thread_id)
            raise
        return self.report(thread_id).model_copy(update={"queued": True})

    def open_job(self, kind: JobKind, label: str) -> OpenedJob:
        """A new job with its lease held by this process: its id can be given out before it runs
        (the API answers with it and runs the job on a thread of its own)."""
        thread_id = self._new_thread_id(kind)
        # The lease first, then the row: a job another process can see is never without its runner.
        lease = self.leases.acquire(thread_id)
        try:
            self._jobs.add(thread_id, kind, label)
        except BaseException:
            self.leases.release(lease)
            raise
        return OpenedJob(thread_id=thread_id, kind=kind, lease=lease)

    def _start(
        self,
        kind: JobKind,
        label: str,
        initial: dict[str, Any],
        on_progress: ProgressHandler | None,
        opened: OpenedJob | None = None,
    ) -> RunReport:
        job = opened or self.open_job(kind, label)
        return self._run(kind, job.thread_id, initial, on_progress, job.lease)

    def resume(self, thread_id: str, on_progress: ProgressHandler | None = None) -> RunReport:
        """Continue a job that stopped without finishing (for example, its process was killed).

        Raises JobBusyError when a live runner (another process, or another thread here) runs it.
        With workers, the resume goes on the queue and this returns at once."""
        job = self.job(thread_id)
        if job.status == CANCELLED:
            raise ValueError(f"job {thread_id} was cancelled: it does not run again (start a new one)")
        if self.queue is not None:
            self.queue.resume(thread_id)
            return self.report(thread_id).model_copy(update={"queued": True})
        if not self._started(thread_id):
            raise JobNotStartedError(
                f"job {thread_id} never reached its first step: it was queued for the workers (run `imaging-agent "
                "worker` with IMAGING_AGENT_BROKER_URL set to that broker), or the process that opened it stopped first"
            )
        return self._run(job.kind, thread_id, None, on_progress)

    # -- what the workers run -----------------------------------------------------------
    def _started(self, thread_id: str) -> bool:
        """Whether the job has a checkpoint (a run of it began)."""
        return self.checkpointer.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}) is not None

    def run_queued(
        self, thread_id: str, initial: dict[str, Any] | None, on_progress: ProgressHandler | None = None
    ) -> RunReport:
        """Run a queued job here: from `initial` when it never started, else on from its last checkpoint.

        A message may arrive twice (a worker died after starting it, or Redis handed it on after its
        visibility timeout), so a job with a checkpoint always continues and never starts over; one
        waiting for a decision nobody gave stays waiting. Raises JobBusyError when a live runner holds
        it, JobNotStartedError for a resume (`initial` None) of a job whose start has not run yet."""
        job = self.job(thread_id)
        if job.status == CANCELLED:  # an engine worker's resume, or a redelivery, after the cancel
            log.info("job %s was cancelled: its queued message is dropped", thread_id)
            return self.report(thread_id)
        lease = self.leases.acquire(thread_id)
        try:
            started = self._started(thread_id)
        except BaseException:
            self.leases.release(lease)
            raise
        if not started and initial is None:
            self.leases.release(lease)
            raise JobNotStartedError(f"job {thread_id} has not started yet; its start message, still queued, runs it")
        return self._run(job.kind, thread_id, None if started else initial, on_progress, lease)

    def dispatch_batch(self, thread_id: str, query: Mapping[str, str] | None, engine: str) -> list[str]:
        """A queued batch on a worker: one study job per study of the work list, each put on the queue
        (so the studies spread over the workers); the batch ends "dispatched". Returns the study jobs.

        The study jobs' ids follow from the batch's, so a dispatch cut short and delivered again adds
        none twice (it sends their start messages again, which a started job ignores); a copy of a
        dispatch that finished sends nothing."""
        if self.queue is None:
            raise RuntimeError("dispatch_batch needs the workers' queue (IMAGING_AGENT_BROKER_URL)")
        engine = check_engine_name(engine)
        with self.leases.acquire(thread_id):
            if self.job(thread_id).status == "dispatched":  # a copy of a dispatch that finished: all was sent
                return [j.thread_id for j in self.jobs() if j.thread_id.startswith(study_job_of(thread_id, ""))]
            studies, skipped = self.workflow.select(query or DEFAULT_WORKLIST_QUERY, engine)
            children = []
            for item in studies:
                child = study_job_of(thread_id, item.imaging_study_id)
                self._jobs.add_if_absent(child, "study", f"ImagingStudy/{item.imaging_study_id}", status="queued")
                self.queue.start_study(child, item.imaging_study_id, engine)
                children.append(child)
            for outcome in skipped:
                log.info("batch %s: study %s skipped: %s", thread_id, outcome["imaging_study_id"], outcome["outcome"])
            self._jobs.set_status(thread_id, "dispatched")
        return children

    def decide(
        self,
        thread_id: str,
        decisions: Mapping[str, ApprovalDecision],
        on_progress: ProgressHandler | None = None,
    ) -> RunReport:
        """Answer one or more pending approvals of a job (interrupt id -> decision) and go on.

        Raises `tools.review.edits.EditError` for a modification whose edits do not fit its result.
        The decisions are recorded first. When a live runner holds the job, the graph is not run
        here: that runner applies them, and the report says so in `running_elsewhere`.

        Each decision claims its approval for its reviewer first (tools/workflow/claims.py): an
        approval another reviewer holds raises ClaimHeldError and nothing is recorded; a recorded
        decision ends the claim."""
        job = self.job(thread_id)
        open_approvals = {p.interrupt_id: p for p in self.report(thread_id).pending}
        unknown = set(decisions) - set(open_approvals)
        if unknown:
            raise KeyError(
                f"job {thread_id} has no pending approval {', '.join(sorted(unknown))}; it was answered "
                "already or never existed. `imaging-agent approvals list` shows what is open."
            )
        for iid, decision in decisions.items():
            # Edits that do not fit the result are refused here, with the reason, before anything
            # is recorded: in the graph they would fail the whole study.
            check_review_edits(open_approvals[iid].request, decision)
        for iid, decision in decisions.items():  # every claim before any record: a refusal records nothing
            holder = ClaimHolder(id=decision.reviewer_id, issuer=decision.issuer, name=decision.reviewer_name)
            pending = open_approvals[iid]
            self.claims.claim(
                thread_id, pending.request.request_id, holder, pending.subject(), refused="Nothing was decided"
            )
        for iid, decision in decisions.items():
            request = open_approvals[iid].request
            try:
                self.decisions.record(thread_id, request.request_id, request_sha256(request), decision)
            except DecisionConflictError:  # answered already: it waits no more either
                self.claims.finish(thread_id, request.request_id)
                raise
            self.claims.finish(thread_id, request.request_id)
        if self.queue is not None:
            # The worker that takes the resume finds the recorded decisions (the approval node reads them).
            self.queue.resume(thread_id)
            return self.report(thread_id).model_copy(update={"queued": True})
        resume = {iid: d.model_dump(mode="json") for iid, d in decisions.items()}
        try:
            return self._run(job.kind, thread_id, Command(resume=resume), on_progress)
        except JobBusyError as exc:
            message = f"the decision is recorded; {exc.holder.describe()}, which applies it when its current run pauses"
            return self.report(thread_id).model_copy(update={"running_elsewhere": message})

    def cancel(self, thread_id: str, reason: str) -> list[PendingApproval]:
        """Withdraw a job that waits (for a decision, a worker, an engine): it ends "cancelled", its
        approvals leave every worklist and its study's FHIR Task says cancelled. Returns the approvals
        withdrawn. Nothing of the job was written (it waited before its writes), and nothing is now.

        Raises JobBusyError while a live runner holds it and ValueError for a finished job."""
        job = self.job(thread_id)
        if job.status in ("done", "dispatched", CANCELLED):
            raise ValueError(f"job {thread_id} is {job.status}: only a job that waits can be cancelled")
        with self.leases.acquire(thread_id):
            withdrawn = self.report(thread_id).pending
            self._jobs.set_status(thread_id, CANCELLED)
            for pending in withdrawn:
                self.claims.finish(thread_id, pending.request.request_id)
            if job.kind == "study":
                task = (self.graphs["study"].get_state(self._config(thread_id)).values or {}).get("task")
                if task is not None:
                    self.workflow.record_cancellation(task.task_id, f"cancelled by an operator: {reason}")
        return withdrawn

    # -- reading ----------------------------------------------------------------------
    def report(self, thread_id: str) -> RunReport:
        job = self.job(thread_id)
        if job.status == "dispatched":
            return self._dispatched_report(job)
        if job.status == CANCELLED:
            return RunReport(thread_id=thread_id, kind=job.kind, done=True, pending=[], outcomes=[])
        state = self.graphs[job.kind].get_state(self._config(thread_id))
        if state.created_at is None:  # queued, not taken by a worker yet
            return RunReport(thread_id=thread_id, kind=job.kind, done=False, pending=[], outcomes=[])
        pending, _answered = self._split_interrupts(thread_id, state.interrupts)
        values = state.values or {}
        outcomes: list[StudyOutcome]
        if job.kind == "batch":
            outcomes = list(values.get("outcomes", []))
        elif values.get("outcome"):
            outcomes = [outcome_of(values)]
        else:
            outcomes = []
        return RunReport(
            thread_id=thread_id,
            kind=job.kind,
            # Read while a runner (a worker, a thread) is between two steps, the last checkpoint's task
            # already has its writes but the next checkpoint is not written yet: LangGraph then lists
            # no `next`, yet that task is still in `tasks`. Done means neither is left.
            done=not state.next and not state.tasks and not pending,
            pending=pending,
            outcomes=outcomes,
            summary=values.get("summary"),
        )

    def _dispatched_report(self, batch: Job) -> RunReport:
        """A dispatched batch stands where its study jobs stand: done when all are, their approvals and outcomes."""
        prefix = study_job_of(batch.thread_id, "")
        reports = [self.report(j.thread_id) for j in self.jobs() if j.thread_id.startswith(prefix)]
        outcomes = [o for r in reports for o in r.outcomes]
        summary: dict[str, int] = {"studies": len(reports)}
        for outcome in outcomes:
            summary[outcome["outcome"]] = summary.get(outcome["outcome"], 0) + 1
        return RunReport(
            thread_id=batch.thread_id,
            kind=batch.kind,
            done=all(r.done for r in reports),
            pending=[p for r in reports for p in r.pending],
            outcomes=outcomes,
            summary=summary,
        )

    def pending_approvals(self) -> list[PendingApproval]:
        """Every approval waiting in any job, oldest job first."""
        pending: list[PendingApproval] = []
        for job in self.jobs(unfinished_only=True):
            pending.extend(self.report(job.thread_id).pending)
        return pending

    def find_pending(self, approval_id: str) -> PendingApproval:
        """A pending approval by its whole interrupt id, result UID or ImagingStudy id.

        Never a prefix: a short guess must not pick someone else's approval."""
        matches = [
            p
            for p in self.pending_approvals()
            if approval_id in (p.interrupt_id, p.request.imaging_study_id, p.request.request_id)
        ]
        if len(matches) != 1:
            raise KeyError(
                f"{'no' if not matches else len(matches)} pending approval(s) match '{approval_id}' (ids are "
                "matched whole); `imaging-agent approvals list` shows the ids."
            )
        return matches[0]


__all__ = [
    "Job",
    "JobNotStartedError",
    "JobQueue",
    "PendingApproval",
    "QueueUnavailableError",
    "RunReport",
    "StudyOutcome",
    "WorkflowRuntime",
    "study_job_of",
]
