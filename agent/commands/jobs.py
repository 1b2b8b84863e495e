"""`imaging-agent process` and `ask`: jobs over the work list, or a goal in plain words, with approvals asked here."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from agent.commands import output
from agent.settings import get_settings


def reviewer_here(settings: Any) -> Any:
    """The principal deciding at this terminal, or the SignInError saying how to become one."""
    from agent.identity import SignInError, cli_principal

    try:
        return cli_principal(settings)
    except SignInError as exc:
        return exc


def decide_interactively(runtime: Any, report: Any, scope: Any, reviewer: Any, signing_window_s: float) -> Any:
    """Ask here for each pending approval of `report`'s job; `scope` (AutoApprovalScope) says what --yes covers.

    `reviewer` is a Principal, or the SignInError why there is none."""
    from agent.cli_review import NoReviewerError, ProgressDisplay, render_approval
    from agent.identity import SignInError
    from agent.review import DecisionError
    from tools.workflow.claims import ClaimHeldError
    from tools.workflow.decisions import DecisionConflictError

    while report.pending:
        pending = report.pending[0]
        render_approval(output.console, pending)
        try:
            decision = _auto_or_asked(runtime, pending, scope, reviewer, signing_window_s)
        except (NoReviewerError, DecisionError, SignInError) as exc:
            output.console.print(f"[yellow]{escape(str(exc))}[/yellow]")
            return report
        try:
            with ProgressDisplay(output.console) as on_progress:
                report = runtime.decide(pending.thread_id, {pending.interrupt_id: decision}, on_progress=on_progress)
        except (KeyError, DecisionConflictError) as exc:
            # Answered meanwhile in another terminal or the app: the first answer stands.
            output.console.print(f"[yellow]{escape(str(exc.args[0]))}[/yellow]")
            report = runtime.report(pending.thread_id)
        except ClaimHeldError as exc:  # another reviewer has it: it stays pending for them (or for later)
            output.console.print(f"[yellow]{escape(str(exc))}[/yellow]")
            return runtime.report(pending.thread_id)
        if report.running_elsewhere:
            return report
    return report


def _auto_or_asked(runtime: Any, pending: Any, scope: Any, reviewer: Any, signing_window_s: float) -> Any:
    """Approve automatically when --yes covers this approval; otherwise ask (and say why when --yes was given).

    `reviewer` is a Principal, or the SignInError why there is none (raised here)."""
    from agent.cli_review import ask_decision
    from agent.identity import SignInError
    from agent.review import build_decision

    if isinstance(reviewer, SignInError):
        raise reviewer
    refusal = scope.refusal(pending, runtime.pending_approvals())
    if refusal is None:
        decision = build_decision("approve", reviewer, automatic=True, signing_window_s=signing_window_s)
        output.console.print(
            f"--yes: approved automatically for {escape(reviewer.display_name)} ({escape(reviewer.id)}); "
            "recorded as not reviewed"
        )
        return decision
    if scope.enabled:
        output.console.print(f"[yellow]--yes does not cover this approval: {escape(refusal)}. Asking instead.[/yellow]")
    return ask_decision(output.console, pending, reviewer, signing_window_s)


def process(
    pending_studies: Annotated[
        bool, typer.Option("--pending", help="Process the FHIR work list (ImagingStudy status registered, CT).")
    ] = False,
    study: Annotated[str | None, typer.Option("--study", help="Process one ImagingStudy by its FHIR id.")] = None,
    query: Annotated[str | None, typer.Option(help="Work list search instead of the default, e.g. 'status=registered&modality=CT'.")] = None,
    engine: Annotated[str | None, typer.Option(help=output.ENGINE_HELP)] = None,
    yes: Annotated[
        bool,
        typer.Option("--yes", help="Approve without asking the results of the job this command starts (you are the reviewer)."),
    ] = False,
) -> None:
    """Segment, review and write back: the batch over pending studies, with an approval prompt per study.

    A job interrupted earlier (a killed process, unanswered approvals) is resumed first; its
    approvals are asked here, never covered by --yes.
    """
    from urllib.parse import parse_qsl

    from agent.auto_approval import AutoApprovalScope
    from agent.cli_review import ProgressDisplay, render_outcomes
    from agent.runtime import AgentRuntime
    from graphs.runtime import JobNotStartedError
    from tools.segmentation.catalog import UnknownEngineError, check_engine_name
    from tools.workflow.leases import JobBusyError

    if not pending_studies and study is None:
        output.console.print("Say what to process: --pending (the work list) or --study IMAGING_STUDY_ID.")
        raise typer.Exit(2)
    try:
        if engine is not None:
            check_engine_name(engine)  # before any job is resumed or started
    except UnknownEngineError as exc:
        output.error(exc)
        raise typer.Exit(2) from exc
    settings = get_settings()
    if yes and settings.broker_url is not None:
        output.error(
            "--yes approves only what runs in this process, and with IMAGING_AGENT_BROKER_URL set the workers run "
            "the job. Leave out --yes and approve with `imaging-agent approvals approve ID` (or the app), or unset "
            "IMAGING_AGENT_BROKER_URL to run here."
        )
        raise typer.Exit(2)
    scope = AutoApprovalScope(enabled=yes)
    reviewer = reviewer_here(settings)
    window = settings.signing_window_s
    with AgentRuntime(settings) as runtime:
        batch_query = dict(parse_qsl(query)) if query else None
        wanted_label = f"ImagingStudy/{study}" if study is not None else runtime.batch_label(batch_query)
        if runtime.queue is not None:
            _process_on_workers(runtime, study, batch_query, engine, wanted_label, reviewer, window)
            return
        reports = []
        resumed_labels = set()
        for job in runtime.jobs(unfinished_only=True):
            # A job a live process runs is that process's: never run twice at once (its lease).
            # Its label counts as handled, so no second job for the same studies starts either.
            resumed_labels.add(job.label)
            runner = runtime.runner(job.thread_id)
            if runner is not None:
                output.console.print(f"[yellow]Skipping: {escape(runner.describe())}; wait for it or stop that process.[/yellow]")
                continue
            gone = runtime.last_runner(job.thread_id)
            output.console.print(
                f"Resuming job {escape(job.thread_id)} ({escape(job.label)}), left {job.status}"
                + (f"; its runner, pid {gone.pid} on {escape(gone.host)}, is gone." if gone else ".")
            )
            report = runtime.report(job.thread_id)
            if not report.pending and not report.done:
                try:
                    with ProgressDisplay(output.console) as on_progress:
                        report = runtime.resume(job.thread_id, on_progress=on_progress)
                except (JobBusyError, JobNotStartedError) as exc:  # taken meanwhile, or only a worker can start it
                    output.console.print(f"[yellow]Skipping: {escape(str(exc))}[/yellow]")
                    continue
            # A resumed job was started elsewhere (another terminal, the app, an earlier run), even
            # when its label matches: its results wait for a person, so --yes never covers them.
            reports.append(decide_interactively(runtime, report, scope, reviewer, window))
        if wanted_label not in resumed_labels:
            with ProgressDisplay(output.console) as on_progress:
                if study is not None:
                    report = runtime.start_study(study, engine=engine, on_progress=on_progress)
                else:
                    report = runtime.start_batch(batch_query, engine=engine, on_progress=on_progress)
            scope.own_jobs.add(report.thread_id)
            reports.append(decide_interactively(runtime, report, scope, reviewer, window))
        for report in reports:
            render_outcomes(output.console, report)
            if report.kind == "batch" and not report.outcomes:
                output.console.print("No study waiting: the work list is empty.")
    if any(o["outcome"] == "failed" for r in reports for o in r.outcomes):
        raise typer.Exit(1)


def _process_on_workers(
    runtime: Any, study: str | None, batch_query: Any, engine: str | None, wanted_label: str, reviewer: Any, window: float
) -> None:
    """With workers: ask here the approvals open jobs wait for (each decision queues its job's resume), then
    queue the job asked for unless an open job covers the same studies. Nothing runs in this process."""
    from agent.auto_approval import AutoApprovalScope
    from graphs.runtime import QueueUnavailableError
    from tools.workflow.jobs import WAITING_ENGINE

    open_labels = set()
    for job in runtime.jobs():
        if job.status == "done":
            continue
        report = runtime.report(job.thread_id)
        if report.done:
            continue
        open_labels.add(job.label)
        if report.pending:
            decide_interactively(runtime, report, AutoApprovalScope(enabled=False), reviewer, window)
        elif job.status in ("running", "waiting-approval", WAITING_ENGINE) and runtime.runner(job.thread_id) is None:
            # Its worker died and its task was acknowledged or lost, or a recorded decision's resume was not
            # queued (the broker was down): a resume goes on from its checkpoint. One waiting for its engine
            # sends its request again: a lost message is replaced, an answered one is answered from its result.
            runtime.resume(job.thread_id)
            output.console.print(f"Job {escape(job.thread_id)} ({escape(job.label)}) has no live runner: resume queued.")
        elif job.status != "dispatched":
            output.console.print(f"Job {escape(job.thread_id)} ({escape(job.label)}) is {escape(job.status)} on the workers.")
    if wanted_label in open_labels:
        return
    try:
        if study is not None:
            report = runtime.start_study(study, engine=engine)
        else:
            report = runtime.start_batch(batch_query, engine=engine)
    except QueueUnavailableError as exc:
        output.error(exc)
        raise typer.Exit(1) from exc
    output.console.print(
        f"Queued job {escape(report.thread_id)} ({escape(wanted_label)}) for the workers. Its approvals show in "
        "`imaging-agent approvals list` and the app when they are ready; run `process` again to answer them here."
    )


def ask(
    goal: Annotated[str, typer.Argument(help="What you want, in plain words, e.g. 'analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS'.")],
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Approve without asking the results of studies the goal names by id (recorded as not reviewed); "
            "everything else is asked.",
        ),
    ] = False,
) -> None:
    """Give the planner a goal; it runs the tools, and asks you here before anything is written."""
    import uuid
    from datetime import UTC, datetime

    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langgraph.types import Command

    from agent.auto_approval import AutoApprovalScope, ids_named_in
    from agent.chat import build_chat_graph
    from agent.cli_review import NoReviewerError, ProgressDisplay, render_approval
    from agent.identity import SignInError
    from agent.llm import planner_info
    from agent.review import DecisionError
    from agent.runtime import AgentRuntime
    from graphs.planner_tools.operations import OPERATOR_KEY
    from graphs.runtime import PendingApproval
    from tools.identity.principal import Principal
    from tools.workflow.approval import ApprovalRequest

    settings = get_settings()
    reviewer = reviewer_here(settings)
    window = settings.signing_window_s
    # The conversation is new, so every job it relays was started by this command.
    scope = AutoApprovalScope(enabled=yes, named_studies=ids_named_in(goal))
    output.console.print(f"[dim]planner: {escape(planner_info(settings).description)}[/dim]")
    with AgentRuntime(settings) as runtime:
        chat = build_chat_graph(runtime)
        # A conversation of its own (two commands in one second never share one): its jobs are this command's.
        configurable: dict[str, object] = {"thread_id": f"cli-chat-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"}
        if isinstance(reviewer, Principal):  # the signed-in person may use the operator tools (retry, re-run, cancel)
            configurable[OPERATOR_KEY] = reviewer.model_dump(mode="json")
        config = {"configurable": configurable}
        value: object = {"messages": [HumanMessage(goal)]}
        while True:
            with ProgressDisplay(output.console) as on_progress:
                for _ns, mode, chunk in chat.stream(value, config, stream_mode=["updates", "custom"], subgraphs=True):
                    if mode == "custom":
                        on_progress(chunk)
                    elif mode == "updates" and "tools" in chunk:
                        for message in (chunk["tools"] or {}).get("messages", []):
                            if isinstance(message, ToolMessage):
                                output.console.print(f"[dim]tool {escape(message.name or '')}: {escape(str(message.content)[:160])}[/dim]")
            state = chat.get_state(config)
            if not state.interrupts:
                break
            card = dict(state.interrupts[0].value)
            pending = PendingApproval(
                thread_id=card.pop("job"), interrupt_id=card.pop("approval_id"), request=ApprovalRequest.model_validate(card)
            )
            render_approval(output.console, pending)
            scope.own_jobs = set(state.values.get("jobs", []))
            try:
                decision = _auto_or_asked(runtime, pending, scope, reviewer, window)
            except (NoReviewerError, DecisionError, SignInError) as exc:
                output.console.print(f"[yellow]{escape(str(exc))}[/yellow]")
                return
            value = Command(resume={"approval_id": pending.interrupt_id, "decision": decision.model_dump(mode="json")})
        last = state.values["messages"][-1]
        output.console.print(Text(str(last.content)) if isinstance(last, AIMessage) else "")
