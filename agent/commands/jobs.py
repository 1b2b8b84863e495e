"""`imaging-agent process` and `ask`: jobs over the work list, or a goal in plain words, with approvals asked here."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from agent.commands import output
from agent.settings import get_settings


def reviewer_here(settings: Any) -> Any:
    """The principal deciding at this terminal, or the SignInError saying how to become one."""
    from agent.identity import SignInError, cli_principal

    try:
        return cli_principal(settings)
    except SignInError as exc:
        return exc


def decide_interactively(runtime: Any, report: Any, yes: bool, reviewer: Any, signing_window_s: float) -> Any:
    """Ask here for each pending approval; `reviewer` is a Principal, or the SignInError why there is none."""
    from agent.cli_review import NoReviewerError, ProgressDisplay, ask_decision, render_approval
    from agent.identity import SignInError
    from agent.review import DecisionError, build_decision
    from tools.workflow.decisions import DecisionConflictError

    while report.pending:
        pending = report.pending[0]
        render_approval(output.console, pending)
        try:
            if isinstance(reviewer, SignInError):
                raise reviewer
            if yes:
                decision = build_decision("approve", reviewer, automatic=True, signing_window_s=signing_window_s)
                output.console.print(
                    f"--yes: approved automatically for {escape(reviewer.display_name)} ({escape(reviewer.id)}); "
                    "recorded as not reviewed"
                )
            else:
                decision = ask_decision(output.console, pending, reviewer, signing_window_s)
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
        if report.running_elsewhere:
            return report
    return report


def process(
    pending_studies: Annotated[
        bool, typer.Option("--pending", help="Process the FHIR work list (ImagingStudy status registered, CT).")
    ] = False,
    study: Annotated[str | None, typer.Option("--study", help="Process one ImagingStudy by its FHIR id.")] = None,
    query: Annotated[str | None, typer.Option(help="Work list search instead of the default, e.g. 'status=registered&modality=CT'.")] = None,
    engine: Annotated[str | None, typer.Option(help=output.ENGINE_HELP)] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Approve every result without asking (you are the reviewer).")] = False,
) -> None:
    """Segment, review and write back: the batch over pending studies, with an approval prompt per study.

    A job interrupted earlier (a killed process, unanswered approvals) is resumed first.
    """
    from urllib.parse import parse_qsl

    from agent.cli_review import ProgressDisplay, render_outcomes
    from agent.runtime import AgentRuntime
    from tools.workflow.leases import JobBusyError

    if not pending_studies and study is None:
        output.console.print("Say what to process: --pending (the work list) or --study IMAGING_STUDY_ID.")
        raise typer.Exit(2)
    settings = get_settings()
    reviewer = reviewer_here(settings)
    window = settings.signing_window_s
    with AgentRuntime(settings) as runtime:
        batch_query = dict(parse_qsl(query)) if query else None
        wanted_label = f"ImagingStudy/{study}" if study is not None else runtime.batch_label(batch_query)
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
                except JobBusyError as exc:  # another process took it between the look and the resume
                    output.console.print(f"[yellow]Skipping: {escape(str(exc))}[/yellow]")
                    continue
            # --yes covers only the job this command was asked to run: another person's waiting
            # results (the app, another terminal) are asked about, never approved automatically.
            reports.append(decide_interactively(runtime, report, yes and job.label == wanted_label, reviewer, window))
        if wanted_label not in resumed_labels:
            with ProgressDisplay(output.console) as on_progress:
                if study is not None:
                    report = runtime.start_study(study, engine=engine, on_progress=on_progress)
                else:
                    report = runtime.start_batch(batch_query, engine=engine, on_progress=on_progress)
            reports.append(decide_interactively(runtime, report, yes, reviewer, window))
        for report in reports:
            render_outcomes(output.console, report)
            if report.kind == "batch" and not report.outcomes:
                output.console.print("No study waiting: the work list is empty.")
    if any(o["outcome"] == "failed" for r in reports for o in r.outcomes):
        raise typer.Exit(1)


def ask(
    goal: Annotated[str, typer.Argument(help="What you want, in plain words, e.g. 'analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS'.")],
    yes: Annotated[bool, typer.Option("--yes", help="Approve every result without asking (recorded as not reviewed).")] = False,
) -> None:
    """Give the planner a goal; it runs the tools, and asks you here before anything is written."""
    from datetime import UTC, datetime

    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langgraph.types import Command

    from agent.chat import build_chat_graph
    from agent.cli_review import NoReviewerError, ProgressDisplay, ask_decision, render_approval
    from agent.identity import SignInError
    from agent.llm import planner_info
    from agent.review import DecisionError, build_decision
    from agent.runtime import AgentRuntime
    from graphs.runtime import PendingApproval
    from tools.workflow.approval import ApprovalRequest

    settings = get_settings()
    reviewer = reviewer_here(settings)
    window = settings.signing_window_s
    output.console.print(f"[dim]planner: {planner_info(settings).description}[/dim]")
    with AgentRuntime(settings) as runtime:
        chat = build_chat_graph(runtime)
        config = {"configurable": {"thread_id": f"cli-chat-{datetime.now(UTC):%Y%m%d-%H%M%S}"}}
        value: object = {"messages": [HumanMessage(goal)]}
        while True:
            with ProgressDisplay(output.console) as on_progress:
                for _ns, mode, chunk in chat.stream(value, config, stream_mode=["updates", "custom"], subgraphs=True):
                    if mode == "custom":
                        on_progress(chunk)
                    elif mode == "updates" and "tools" in chunk:
                        for message in (chunk["tools"] or {}).get("messages", []):
                            if isinstance(message, ToolMessage):
                                output.console.print(f"[dim]tool {message.name}: {str(message.content)[:160]}[/dim]")
            state = chat.get_state(config)
            if not state.interrupts:
                break
            card = dict(state.interrupts[0].value)
            pending = PendingApproval(
                thread_id=card.pop("job"), interrupt_id=card.pop("approval_id"), request=ApprovalRequest.model_validate(card)
            )
            render_approval(output.console, pending)
            try:
                if isinstance(reviewer, SignInError):
                    raise reviewer
                if yes:
                    decision = build_decision("approve", reviewer, automatic=True, signing_window_s=window)
                else:
                    decision = ask_decision(output.console, pending, reviewer, window)
            except (NoReviewerError, DecisionError, SignInError) as exc:
                output.console.print(f"[yellow]{escape(str(exc))}[/yellow]")
                return
            value = Command(resume={"approval_id": pending.interrupt_id, "decision": decision.model_dump(mode="json")})
        last = state.values["messages"][-1]
        output.console.print(last.content if isinstance(last, AIMessage) else "")
