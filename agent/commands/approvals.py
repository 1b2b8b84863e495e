"""`imaging-agent approvals list|show|claim|release|approve|reject`: the worklist from any terminal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from agent.commands import output
from agent.settings import get_settings
from agent.untrusted import terminal_text as cell
from tools.workflow.rejection_reasons import REJECTION_REASONS

approvals_app = typer.Typer(help="Pending radiologist approvals, shared by the CLI, the app and the API.", no_args_is_help=True)


@approvals_app.command("list")
def approvals_list(
    flag: Annotated[
        str | None, typer.Option("--flag", help="Only with this QA flag code (e.g. volume-low); 'any' or 'none'.")
    ] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="Only results of this engine.")] = None,
    modality: Annotated[str | None, typer.Option("--modality", help="Only this modality (e.g. CT).")] = None,
) -> None:
    """Every pending approval, in every job: longest waiting first, with who claimed it."""
    from agent.runtime import AgentRuntime
    from graphs.approval_worklist import WorklistFilter, waiting_text, worklist
    from tools.workflow.claims import utc_text

    with AgentRuntime(get_settings()) as runtime:
        entries = worklist(runtime, WorklistFilter(flag=flag, engine=engine, modality=modality))
    now = datetime.now(UTC)
    table = Table()
    # Ids are typed back (`approvals approve ID`): kept whole on one line; the other columns wrap.
    for header, ids in (
        ("id", [e.approval.interrupt_id for e in entries]),
        ("job", [e.approval.thread_id for e in entries]),
        ("ImagingStudy", [e.approval.request.imaging_study_id for e in entries]),
    ):
        table.add_column(header, no_wrap=True, min_width=max((len(i) for i in ids), default=len(header)))
    for header in ("patient", "waiting", "engine", "QA flags", "claimed by"):
        table.add_column(header)
    for e in entries:
        p = e.approval
        held = f"{e.claim.holder.name} ({e.claim.holder.id}) until {utc_text(e.claim.expires_at)}" if e.claim else "-"
        table.add_row(
            p.interrupt_id, p.thread_id, cell(p.request.imaging_study_id), cell(p.request.patient_id),
            waiting_text(e.waiting_s(now)), cell(f"{e.engine} ({e.modality})"), cell(", ".join(e.flag_codes) or "-"),
            cell(held),
        )
    output.console.print(table)
    output.console.print(f"{len(entries)} pending")


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


def _claim(approval_id: str, take: bool) -> None:
    from agent.identity import SignInError, cli_principal
    from agent.review import DecisionError, claim_holder
    from agent.runtime import AgentRuntime
    from graphs.approval_worklist import claim, release
    from tools.workflow.claims import ClaimHeldError, utc_text

    settings = get_settings()
    try:
        holder = claim_holder(cli_principal(settings))
    except (SignInError, DecisionError) as exc:
        output.error(exc)
        raise typer.Exit(2) from exc
    with AgentRuntime(settings) as runtime:
        try:
            pending = runtime.find_pending(approval_id)
            if take:
                held = claim(runtime, pending, holder)
                output.console.print(cell(f"{pending.subject()} is yours until {utc_text(held.expires_at)}."))
            elif release(runtime, pending, holder):
                output.console.print(cell(f"{pending.subject()} is released."))
            else:
                output.console.print(cell(f"You held no claim on {pending.subject()}; nothing changed."))
        except (KeyError, ClaimHeldError) as exc:
            output.error(exc.args[0])
            raise typer.Exit(1) from exc


@approvals_app.command("claim")
def approvals_claim(approval_id: output.ApprovalId) -> None:
    """Claim an approval to review it: the others see it is yours, and cannot decide it until you release
    it, decide it, or the claim expires (IMAGING_AGENT_CLAIM_MINUTES). Claiming again renews it."""
    _claim(approval_id, take=True)


@approvals_app.command("release")
def approvals_release(approval_id: output.ApprovalId) -> None:
    """Release your claim on an approval, for another reviewer to take."""
    _claim(approval_id, take=False)


def _decide(approval_id: str, action: str, reason: str | None, reason_code: str | None = None) -> None:
    from agent.cli_review import ProgressDisplay, render_outcomes
    from agent.identity import SignInError, cli_principal
    from agent.review import DecisionError, build_decision
    from agent.runtime import AgentRuntime
    from graphs.runtime import QueueUnavailableError
    from tools.workflow.claims import ClaimHeldError

    settings = get_settings()
    try:
        decision = build_decision(
            action, cli_principal(settings), reason, signing_window_s=settings.signing_window_s, reason_code=reason_code
        )
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
        except ClaimHeldError as exc:
            output.error(exc)
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
    reason: Annotated[str | None, typer.Option("--reason", help="Why, in your words (recorded in the FHIR Task).")] = None,
    code: Annotated[
        str | None, typer.Option("--code", help=f"Why, from the list: {', '.join(REJECTION_REASONS)}.")
    ] = None,
) -> None:
    """Reject with a reason code, a reason in words, or both: nothing is written to the PACS; the Task records it."""
    _decide(approval_id, "reject", reason, code)
