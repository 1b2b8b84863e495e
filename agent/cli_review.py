"""Terminal rendering of approvals and progress, for a radiologist at the command line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.review import DecisionError, build_decision
from agent.untrusted import markup_literal as lit
from agent.untrusted import terminal_text as cell
from graphs.runtime import PendingApproval, RunReport
from tools.identity.principal import Principal
from tools.workflow.approval import ApprovalDecision, ApprovalRequest


def _patient_identities(r: ApprovalRequest) -> str:
    """FHIR's patient beside the one the DICOM headers name (checked equal at fetch), both escaped:
    names and ids are record text, never rich markup."""
    fhir = f"FHIR {r.patient_reference or '-'}: {r.patient_display_name or '(no name)'}, ID {r.patient_id or '-'}"
    issuer = f" (issuer {r.dicom_issuer_of_patient_id})" if r.dicom_issuer_of_patient_id else ""
    dicom = f"DICOM: {r.dicom_patient_name or '(no name)'}, PatientID {r.dicom_patient_id or '-'}{issuer}"
    return f"[dim]{lit(fhir)}   {lit(dicom)}[/dim]"


def render_approval(console: Console, pending: PendingApproval) -> None:
    """The card in the terminal; record text (names, descriptions, reasons) prints literally."""
    r = pending.request
    header = (
        f"[bold]{lit(r.patient_display_name or '(no name)')}[/bold]  ID {lit(r.patient_id or '-')}   "
        f"study {lit(r.study_date or '-')} {lit(r.study_description or '')}\n"
        f"{_patient_identities(r)}\n"
        f"ImagingStudy/{lit(r.imaging_study_id)}   Study UID {lit(r.study_instance_uid)}\n"
        f"series {lit(r.series.series_instance_uid)}: {r.series.images} images, "
        f"{r.series.slice_thickness_mm or '?'} mm\n[dim]{lit(r.series.reason)}[/dim]\n"
        f"engine {lit(r.engine)} {lit(r.engine_version)}"
        + "".join(f"\n[yellow]not used: {lit(why)}[/yellow]" for why in r.engine_fallbacks)
    )
    structures = Table("structure", "size", "mean HU", "components", "confidence", title="Structures")
    for s in r.structures:
        hu = "-" if s.area_mm2 is not None else f"{s.mean_hu:.0f}"
        structures.add_row(cell(s.display), s.size_text(), hu, str(s.n_components), f"{s.confidence:.2f}")
    flags = Table("severity", "finding", title="QA flags")
    for f in r.flags:
        colour = {"fail": "red", "warning": "yellow"}.get(f.severity, "white")
        flags.add_row(cell(f.severity, style=colour), cell(f.message))
    writes = Table("write", "object", "UID / target", "sha256 / change", title="Pending writes (nothing is written before you decide)")
    for w in r.dicom_writes:
        writes.add_row("PACS STOW", cell(f"{w.kind} ({w.sop_class_name})"), cell(w.sop_instance_uid), cell(w.sha256[:16] + "…"))
    for c in r.fhir_changes:
        writes.add_row(cell(f"FHIR {c.method}"), cell(c.resource_type), cell(c.target), cell(c.summary))
    console.print(Panel(header, title=f"Approval {lit(pending.interrupt_id)}  (job {lit(pending.thread_id)})"))
    console.print(structures)
    if r.flags:
        console.print(flags)
    else:
        console.print("QA flags: none")
    if r.engine_endpoint:
        console.print(f"engine endpoint: {lit(r.engine_endpoint)}")
    if r.input_check is not None:
        verdict = "as expected" if r.input_check.matches else "[red]NOT what the goal expects[/red]"
        console.print(
            f"input check ({lit(r.input_check.model)} at {lit(r.input_check.endpoint)}): {lit(r.input_check.best)}, {verdict}"
        )
    if r.draft is not None:
        draft = Table("#", "AI-drafted finding (preliminary)", "boxes", title=(
            f"Draft by {r.draft.model} {r.draft.model_version} at {r.draft.endpoint}"
        ))
        for number, finding in enumerate(r.draft.findings, start=1):
            draft.add_row(str(number), cell(finding.text), str(len(finding.boxes)))
        console.print(draft)
    console.print(cell("Previews: " + ("\n  ".join(["", *r.previews]) if r.previews else "none")))
    console.print(writes)


class NoReviewerError(RuntimeError):
    """Nobody can answer: standard input is not a terminal (or was closed)."""


def ask_decision(
    console: Console, pending: PendingApproval, reviewer: Principal, signing_window_s: float
) -> ApprovalDecision:
    """y approves; n asks for a reason; any other text is the reason for a rejection.

    Raises NoReviewerError when no answer can be read, DecisionError when the principal may not decide."""
    try:
        return _ask(console, reviewer, signing_window_s)
    except EOFError as exc:
        raise NoReviewerError(
            "no answer could be read (standard input is closed); the approval stays pending. Answer it with "
            f"`imaging-agent approvals approve {pending.interrupt_id}` or `... reject {pending.interrupt_id} --reason ...`."
        ) from exc


def _ask(console: Console, reviewer: Principal, signing_window_s: float) -> ApprovalDecision:
    """Asks again until the answer is a decision (a rejection needs a reason)."""
    # A principal who may not decide is told now, before any question.
    build_decision("approve", reviewer, signing_window_s=signing_window_s)
    console.print(f"Deciding as {escape(reviewer.display_name)} ({escape(reviewer.id)}, {escape(reviewer.issuer)})")
    while True:
        answer = console.input("[bold]Approve and write these results? \\[y / n / or type a rejection reason]: [/bold]").strip()
        if answer.lower() in ("y", "yes"):
            return build_decision("approve", reviewer, signing_window_s=signing_window_s)
        if answer.lower() in ("n", "no"):
            answer = console.input("Reason for rejecting (it is recorded in the FHIR Task): ").strip()
        try:
            return build_decision("reject", reviewer, reason=answer, signing_window_s=signing_window_s)
        except DecisionError as exc:
            console.print(f"[yellow]{escape(str(exc))}[/yellow]")


def render_outcomes(console: Console, report: RunReport) -> None:
    table = Table("ImagingStudy", "outcome", "seconds", "detail", title=f"Job {lit(report.thread_id)}")
    for o in report.outcomes:
        colour = {"completed": "green", "rejected": "yellow", "skipped": "yellow"}.get(o["outcome"], "red")
        table.add_row(cell(o["imaging_study_id"]), cell(o["outcome"], style=colour), f"{o['seconds']:.1f}", cell(o["detail"]))
    console.print(table)
    if report.pending:
        console.print(f"{len(report.pending)} approval(s) still pending: `imaging-agent approvals list`.")
    if report.running_elsewhere:
        console.print(f"[yellow]{escape(report.running_elsewhere)}[/yellow]")


class ProgressDisplay:
    """One progress bar per study, fed by the graphs' custom stream events."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            # The study id comes from the records: never read as markup.
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[stage]}", markup=False),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Callable[[dict[str, Any]], None]:
        self.progress.__enter__()
        return self.update

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def update(self, event: dict[str, Any]) -> None:
        study = str(event.get("imaging_study_id", "?"))
        if study not in self.tasks:
            self.tasks[study] = self.progress.add_task(f"ImagingStudy/{study[:12]}", total=100, stage="")
        stage = str(event.get("stage", ""))
        label = "waiting for approval" if stage == "approval" else stage
        self.progress.update(self.tasks[study], completed=float(event.get("percent", 0)), stage=label)
