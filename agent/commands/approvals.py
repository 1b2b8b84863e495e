"""`imaging-agent approvals list|show|approve|reject`: pending approvals from any terminal."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agent.commands import output
from agent.settings import get_settings
from agent.untrusted import terminal_text as cell

approvals_app = typer.Typer(help="Pending radiologist approvals, shared by the CLI, the app and the API.", no_args_is_help=True)


@approvals_app.command("list")
def approvals_list() -> None:
    """Every pending approval, in every job."""
    from agent.runtime import AgentRuntime

    with AgentRuntime(get_settings()) as runtime:
        pending = runtime.pending_approvals()
    table = Table("id", "job", "ImagingStudy", "patient", "structures", "QA flags")
    for p in pending:
        volumes = ", ".join(f"{s.display} {s.volume_ml:.0f} mL" for s in p.request.structures)
        table.add_row(
            p.interrupt_id, p.thread_id, cell(p.request.imaging_study_id), cell(p.request.patient_id), cell(volumes),
            str(len(p.request.flags)),
        )
    output.console.print(table)
    output.console.print(f"{len(pending)} pending")


@approvals_app.command("show")
def approvals_show(approval_id: output.ApprovalId) -> None:
    """Everything the reviewer needs to decide one approval."""
    from agent.cli_review import render_approval
    from agent.runtime import AgentRuntime

    with AgentRuntime(get_settings()) as runtime:
        try:
            render_approval(output.console, runtime.find_pending(approval_id))
        except KeyError as exc:
            output.error(exc.args[0])
            raise typer.Exit(1) from exc


def _decide(approval_id: str, action: str, reason: str | None) -> None:
    from agent.cli_review import ProgressDisplay, render_outcomes
    from agent.identity import SignInError, cli_principal
    from agent.review import DecisionError, build_decision
    from agent.runtime import AgentRuntime
    from graphs.runtime import QueueUnavailableError

    settings = get_settings()
    try:
        decision = build_decision(action, cli_principal(settings), reason, signing_window_s=settings.signing_window_s)
    except (SignInError, DecisionError) as exc:
        output.error(exc)
        raise typer.Exit(2) from exc
    with AgentRuntime(settings) as runtime:
        try:
            pending = runtime.find_pending(approval_id)
        except KeyError as exc:
            output.error(exc.args[0])
            raise typer.Exit(1) from exc
        try:
            with ProgressDisplay(output.console) as on_progress:
                report = runtime.decide(pending.thread_id, {pending.interrupt_id: decision}, on_progress=on_progress)
        except QueueUnavailableError as exc:  # the decision is recorded; only its resume is not queued
            output.error(f"{exc}. The decision is recorded: `imaging-agent process` queues the job's resume later.")
            raise typer.Exit(1) from exc
    if report.queued:
        output.console.print(f"Recorded; job {report.thread_id} goes on on the first free worker.")
    render_outcomes(output.console, report)


@approvals_app.command("approve")
def approvals_approve(approval_id: output.ApprovalId) -> None:
    """Approve as the signed-in principal: the results are stored in the PACS and reported in FHIR."""
    _decide(approval_id, "approve", None)


@approvals_app.command("reject")
def approvals_reject(
    approval_id: output.ApprovalId,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the FHIR Task).")],
) -> None:
    """Reject with a reason: nothing is written to the PACS; the Task records the decision."""
    _decide(approval_id, "reject", reason)
