"""The `imaging-agent` command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent import services
from agent.parts import fhir_client
from agent.settings import get_settings
from tools.segmentation.catalog import engine_names

console = Console()
app = typer.Typer(
    help="imaging-agent: AI results between PACS and EHR, with radiologist approval before every write.",
    no_args_is_help=True,
    add_completion=False,
)
# The engine names come from the catalog, so --help lists exactly the engines that exist.
ENGINE_HELP = f"Segmentation engine: {', '.join(engine_names())} (default from settings)."
services_app = typer.Typer(help="Start, stop and inspect the local Orthanc (PACS) and FHIR server.", no_args_is_help=True)
app.add_typer(services_app, name="services")


@app.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx and urllib3 log full URLs with their query strings, which can hold patient names.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def _error(exc: object) -> None:
    # Messages carry paths and server text; brackets in them must not be read as markup.
    console.print(f"[red]error:[/red] {escape(str(exc))}")


def _print_status(rows: list[services.ServiceStatus]) -> None:
    # One block per service, not a table: a table cuts URLs and paths to fit 80 columns, and a
    # newcomer needs them whole. soft_wrap leaves long lines to the terminal, so they copy whole.
    for row in rows:
        state = f"[green]up[/green] (pid {row.pid})" if row.healthy else f"[red]{escape(row.detail)}[/red]"
        console.print(f"[bold]{escape(row.name)}[/bold]: {state}", soft_wrap=True)
        console.print(f"  health URL: {escape(row.url)}", soft_wrap=True)
        console.print(f"  log:        {escape(str(row.log_file))}", soft_wrap=True)


@services_app.command("up")
def services_up() -> None:
    """Start Orthanc and the FHIR server (or find them running) and wait until both answer."""
    settings = get_settings()
    try:
        rows = services.up(settings)
    except services.ServiceError as exc:
        _error(exc)
        raise typer.Exit(1) from exc
    _print_status(rows)
    console.print(f"DICOMweb: {settings.dicomweb_url}   FHIR: {settings.fhir_url}")


@services_app.command("down")
def services_down() -> None:
    """Stop the servers started by `services up` (by their PID files, nothing else)."""
    for name, was_running in services.down(get_settings()):
        console.print(f"{name}: {'stopped' if was_running else 'was not running'}")


@services_app.command("status")
def services_status() -> None:
    """Show what runs where."""
    rows = services.status(get_settings())
    _print_status(rows)
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


@app.command()
def seed(
    dicom: Annotated[
        Path | None,
        typer.Option("--dicom", help="Folder of DICOM files to load; without it a synthetic chest CT phantom is made."),
    ] = None,
    phantom_seed: Annotated[int, typer.Option(help="Random seed of the phantom (same seed, same UIDs).")] = 0,
) -> None:
    """Load DICOM into the PACS and register Patient + ImagingStudy (status registered) in FHIR."""
    from agent.seed import SeedError, seed_folder, seed_phantom

    settings = get_settings()
    try:
        results = seed_folder(settings, dicom) if dicom else [seed_phantom(settings, phantom_seed)]
    except SeedError as exc:
        _error(exc)
        raise typer.Exit(1) from exc
    table = Table("study", "patient", "series", "instances", "stored", "already in PACS", "ImagingStudy")
    for r in results:
        table.add_row(
            r.study_instance_uid,
            r.patient_id,
            str(r.series_count),
            str(r.instance_count),
            str(r.stored),
            str(r.already_present),
            f"{r.imaging_study_id} ({'created' if r.imaging_study_created else 'existing'})",
        )
    console.print(table)


@app.command()
def pending(
    query: Annotated[
        str | None,
        typer.Option(help="FHIR ImagingStudy search, e.g. 'status=registered&modality=CT' (the default)."),
    ] = None,
) -> None:
    """List the ImagingStudies waiting in FHIR: the agent's work list."""
    from urllib.parse import parse_qsl

    from tools.fhir.errors import FhirError
    from tools.fhir.worklist import find_worklist
    from tools.http.retry import ServiceUnavailableError

    settings = get_settings()
    try:
        with fhir_client(settings) as fhir:
            items = find_worklist(fhir, dict(parse_qsl(query)) if query else None)
    except (FhirError, ServiceUnavailableError) as exc:
        _error(exc)
        raise typer.Exit(1) from exc
    table = Table("ImagingStudy", "Study Instance UID", "patient", "started", "modality", "series", "instances", "status")
    for item in items:
        table.add_row(
            item.imaging_study_id,
            item.study_instance_uid or "-",
            item.patient_reference or "-",
            item.started or "-",
            ",".join(item.modalities),
            str(item.number_of_series or "-"),
            str(item.number_of_instances or "-"),
            item.status,
        )
    console.print(table)
    console.print(f"{len(items)} stud{'y' if len(items) == 1 else 'ies'} waiting at {settings.fhir_url}")


@app.command()
def contour(
    dicom_dir: Annotated[Path, typer.Argument(help="Folder with one CT series.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (must be new or empty).")],
    engine: Annotated[str | None, typer.Option(help=ENGINE_HELP)] = None,
    formats: Annotated[
        str, typer.Option(help="Comma-separated: rtstruct,seg,sr,png,json (report.txt is always written).")
    ] = "rtstruct,seg,sr,png,json",
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Contour the lungs of a local series, offline: RTSTRUCT, SEG, SR, previews and summary.json."""
    from rich.progress import Progress

    from agent.contour import ContourError, run_contour
    from agent.parts import engine_catalog
    from tools.results.package import ALL_FORMATS
    from tools.segmentation.base import EngineError
    from tools.workflow.prepare import engine_chain
    from tools.workflow.records import StudyFailure

    wanted = [f.strip().lower() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(ALL_FORMATS))
    if unknown:
        _error(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(ALL_FORMATS)}.")
        raise typer.Exit(2)
    if "sr" in wanted and "seg" not in wanted:
        _error("the SR references the SEG: ask for 'seg' too, or leave 'sr' out of --formats.")
        raise typer.Exit(2)
    settings = get_settings()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("contour", total=1.0)
        try:
            package, not_used = run_contour(
                dicom_dir,
                out,
                engine_catalog(settings),
                engine_chain(engine or settings.default_engine, settings.fallback_engines),
                formats=wanted,  # type: ignore[arg-type]
                overwrite=overwrite,
                progress=lambda stage, fraction: bar.update(task, completed=fraction, description=stage),
            )
        except (ContourError, EngineError, StudyFailure, ValueError) as exc:
            _error(exc)
            raise typer.Exit(1) from exc
    table = Table("structure", "volume", "mean HU", "components", "confidence")
    for s in package.structures:
        m = s.measurements
        table.add_row(s.display, f"{m.volume_ml:.1f} mL", f"{m.mean_hu or 0:.0f}", str(m.n_components), f"{s.confidence:.2f}")
    console.print(table)
    for reason in not_used:
        console.print(f"[yellow]engine not used[/yellow] {escape(reason)}")
    for flag in package.flags:
        console.print(f"[yellow]{flag.severity}[/yellow] {escape(flag.message)}")
    for obj in package.objects:
        console.print(f"{obj.kind:<8} {obj.path}  sha256 {obj.sha256[:16]}…")
    if package.previews:
        console.print(f"previews: {len(package.previews)} PNG in {package.out_dir / 'previews'}")
    console.print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in package.seconds.items()))


@app.command()
def ui(port: Annotated[int | None, typer.Option("--port", help="Port on 127.0.0.1 (default from settings, 7860).")] = None) -> None:
    """Serve the Gradio app (chat, approvals, jobs) on http://127.0.0.1:PORT."""
    import app as web

    web.main(get_settings(), port)


@app.command()
def train(
    out: Annotated[Path, typer.Option("-o", "--out", help="Run folder: checkpoints/, metrics.json and the bundle in OUT/bundle.")],
    epochs: Annotated[int, typer.Option(min=1, help="Total epochs; a resumed run continues up to this number.")] = 50,
    from_bundle: Annotated[
        Path | None, typer.Option("--from-bundle", help="Fine-tune this MONAI bundle (configs + models/model.pt) instead of a new UNet.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUT from its last checkpoint (same split).")] = False,
    cases_dir: Annotated[Path | None, typer.Option("--cases-dir", help="Folder of training cases (default: OUT/cases).")] = None,
    gather: Annotated[
        bool, typer.Option("--gather/--no-gather", help="First gather approved results and human-made contours from the PACS.")
    ] = True,
    val_fraction: Annotated[float, typer.Option(min=0.01, max=0.99, help="Share of cases held out for Dice (chosen by case id).")] = 0.2,
    min_cases: Annotated[int, typer.Option(min=2, help="Refuse to train on fewer cases than this.")] = 5,
) -> None:
    """Train or fine-tune a MONAI UNet on approved lung contours from the PACS; write a bundle for the monai-bundle engine."""
    from rich.progress import Progress

    from agent.parts import pacs_client
    from tools.dicomweb.client import PacsError
    from tools.fhir.errors import FhirError
    from tools.http.retry import ServiceUnavailableError
    from tools.segmentation.base import EngineError
    from tools.training.gather import gather_cases
    from tools.training.train import TrainConfig, TrainingError, case_pixdim
    from tools.training.train import train as run_training

    settings = get_settings()
    cases = cases_dir or out / "cases"
    config = TrainConfig(
        epochs=epochs, val_fraction=val_fraction, min_cases=min_cases, from_bundle=from_bundle, device=settings.torch_device
    )
    try:
        if gather:
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("gathering approved results from the PACS", total=None)
                with pacs_client(settings) as pacs, fhir_client(settings) as fhir:
                    report = gather_cases(
                        pacs,
                        fhir,
                        cases,
                        pixdim=case_pixdim(config),
                        progress=lambda done, total: bar.update(task, completed=done, total=total),
                    )
            reused = sum(pair.reused for pair in report.pairs)
            console.print(
                f"{len(report.pairs)} case(s) in {cases} ({reused} already there) from {report.studies_scanned} "
                f"stud{'y' if report.studies_scanned == 1 else 'ies'}; {len(report.skipped)} label series skipped"
            )
            for skipped in report.skipped:
                console.print(f"[yellow]skipped[/yellow] {escape(str(skipped))}")
        result = run_training(cases, out, config, resume=resume)
    except (ServiceUnavailableError, PacsError, FhirError, TrainingError, EngineError, ValueError) as exc:
        _error(exc)
        raise typer.Exit(1) from exc
    table = Table("structure", "held-out Dice")
    for key, dice in result.dice.items():
        table.add_row(key, f"{dice:.3f}")
    console.print(table)
    console.print(
        f"epochs {result.first_epoch}-{result.last_epoch} on {len(result.train_cases)} case(s), "
        f"{len(result.val_cases)} held out, {result.seconds:.0f} s"
    )
    console.print(
        f"bundle {result.version} in {result.bundle_dir}: set IMAGING_AGENT_MONAI_BUNDLE_DIR={result.bundle_dir} "
        "and use --engine monai-bundle"
    )


approvals_app = typer.Typer(help="Pending radiologist approvals, shared by the CLI, the app and the API.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")

ReviewerId = Annotated[str | None, typer.Option("--reviewer-id", help="Who decides (default: settings, then OS user).")]
ReviewerName = Annotated[str | None, typer.Option("--reviewer-name", help="Display name of the reviewer.")]


def _decide_interactively(runtime: Any, report: Any, yes: bool, reviewer: tuple[str, str]) -> Any:
    from agent.cli_review import NoReviewerError, ProgressDisplay, ask_decision, render_approval
    from agent.review import DecisionError, build_decision

    while report.pending:
        pending = report.pending[0]
        render_approval(console, pending)
        try:
            if yes:
                decision = build_decision("approve", *reviewer, automatic=True)
                console.print(f"--yes: approved automatically for {reviewer[1]} ({reviewer[0]}); recorded as not reviewed")
            else:
                decision = ask_decision(console, pending, reviewer)
        except (NoReviewerError, DecisionError) as exc:
            console.print(f"[yellow]{escape(str(exc))}[/yellow]")
            return report
        with ProgressDisplay(console) as on_progress:
            report = runtime.decide(pending.thread_id, {pending.interrupt_id: decision}, on_progress=on_progress)
    return report


@app.command()
def process(
    pending_studies: Annotated[
        bool, typer.Option("--pending", help="Process the FHIR work list (ImagingStudy status registered, CT).")
    ] = False,
    study: Annotated[str | None, typer.Option("--study", help="Process one ImagingStudy by its FHIR id.")] = None,
    query: Annotated[str | None, typer.Option(help="Work list search instead of the default, e.g. 'status=registered&modality=CT'.")] = None,
    engine: Annotated[str | None, typer.Option(help=ENGINE_HELP)] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Approve every result without asking (you are the reviewer).")] = False,
    reviewer_id: ReviewerId = None,
    reviewer_name: ReviewerName = None,
) -> None:
    """Segment, review and write back: the batch over pending studies, with an approval prompt per study.

    A job interrupted earlier (a killed process, unanswered approvals) is resumed first.
    """
    from urllib.parse import parse_qsl

    from agent.cli_review import ProgressDisplay, default_reviewer, render_outcomes
    from agent.runtime import AgentRuntime

    if not pending_studies and study is None:
        console.print("Say what to process: --pending (the work list) or --study IMAGING_STUDY_ID.")
        raise typer.Exit(2)
    settings = get_settings()
    reviewer = default_reviewer(settings, reviewer_id, reviewer_name)
    with AgentRuntime(settings) as runtime:
        batch_query = dict(parse_qsl(query)) if query else None
        wanted_label = f"ImagingStudy/{study}" if study is not None else runtime.batch_label(batch_query)
        reports = []
        resumed_labels = set()
        for job in runtime.jobs(unfinished_only=True):
            console.print(f"Resuming job {job.thread_id} ({job.label}), left {job.status}.")
            report = runtime.report(job.thread_id)
            if not report.pending and not report.done:
                with ProgressDisplay(console) as on_progress:
                    report = runtime.resume(job.thread_id, on_progress=on_progress)
            # --yes covers only the job this command was asked to run: another person's waiting
            # results (the app, another terminal) are asked about, never approved automatically.
            reports.append(_decide_interactively(runtime, report, yes and job.label == wanted_label, reviewer))
            resumed_labels.add(job.label)
        if wanted_label not in resumed_labels:
            with ProgressDisplay(console) as on_progress:
                if study is not None:
                    report = runtime.start_study(study, engine=engine, on_progress=on_progress)
                else:
                    report = runtime.start_batch(batch_query, engine=engine, on_progress=on_progress)
            reports.append(_decide_interactively(runtime, report, yes, reviewer))
        for report in reports:
            render_outcomes(console, report)
            if report.kind == "batch" and not report.outcomes:
                console.print("No study waiting: the work list is empty.")
    if any(o["outcome"] == "failed" for r in reports for o in r.outcomes):
        raise typer.Exit(1)


@app.command()
def ask(
    goal: Annotated[str, typer.Argument(help="What you want, in plain words, e.g. 'analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS'.")],
    yes: Annotated[bool, typer.Option("--yes", help="Approve every result without asking (recorded as not reviewed).")] = False,
    reviewer_id: ReviewerId = None,
    reviewer_name: ReviewerName = None,
) -> None:
    """Give the planner a goal; it runs the tools, and asks you here before anything is written."""
    from datetime import UTC, datetime

    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langgraph.types import Command

    from agent.chat import build_chat_graph
    from agent.cli_review import NoReviewerError, ProgressDisplay, ask_decision, default_reviewer, render_approval
    from agent.llm import planner_info
    from agent.review import DecisionError, build_decision
    from agent.runtime import AgentRuntime
    from graphs.runtime import PendingApproval
    from tools.workflow.approval import ApprovalRequest

    settings = get_settings()
    reviewer = default_reviewer(settings, reviewer_id, reviewer_name)
    console.print(f"[dim]planner: {planner_info(settings).description}[/dim]")
    with AgentRuntime(settings) as runtime:
        chat = build_chat_graph(runtime)
        config = {"configurable": {"thread_id": f"cli-chat-{datetime.now(UTC):%Y%m%d-%H%M%S}"}}
        value: object = {"messages": [HumanMessage(goal)]}
        while True:
            with ProgressDisplay(console) as on_progress:
                for _ns, mode, chunk in chat.stream(value, config, stream_mode=["updates", "custom"], subgraphs=True):
                    if mode == "custom":
                        on_progress(chunk)
                    elif mode == "updates" and "tools" in chunk:
                        for message in (chunk["tools"] or {}).get("messages", []):
                            if isinstance(message, ToolMessage):
                                console.print(f"[dim]tool {message.name}: {str(message.content)[:160]}[/dim]")
            state = chat.get_state(config)
            if not state.interrupts:
                break
            card = dict(state.interrupts[0].value)
            pending = PendingApproval(
                thread_id=card.pop("job"), interrupt_id=card.pop("approval_id"), request=ApprovalRequest.model_validate(card)
            )
            render_approval(console, pending)
            try:
                if yes:
                    decision = build_decision("approve", *reviewer, automatic=True)
                else:
                    decision = ask_decision(console, pending, reviewer)
            except (NoReviewerError, DecisionError) as exc:
                console.print(f"[yellow]{escape(str(exc))}[/yellow]")
                return
            value = Command(resume={"approval_id": pending.interrupt_id, "decision": decision.model_dump(mode="json")})
        last = state.values["messages"][-1]
        console.print(last.content if isinstance(last, AIMessage) else "")


@approvals_app.command("list")
def approvals_list() -> None:
    """Every pending approval, in every job."""
    from agent.runtime import AgentRuntime

    with AgentRuntime(get_settings()) as runtime:
        pending = runtime.pending_approvals()
    table = Table("id", "job", "ImagingStudy", "patient", "structures", "QA flags")
    for p in pending:
        volumes = ", ".join(f"{s.display} {s.volume_ml:.0f} mL" for s in p.request.structures)
        table.add_row(p.interrupt_id[:8], p.thread_id, p.request.imaging_study_id, p.request.patient_id or "-", volumes, str(len(p.request.flags)))
    console.print(table)
    console.print(f"{len(pending)} pending")


@approvals_app.command("show")
def approvals_show(approval_id: Annotated[str, typer.Argument(help="Approval id (a unique prefix), result UID or ImagingStudy id.")]) -> None:
    """Everything the reviewer needs to decide one approval."""
    from agent.cli_review import render_approval
    from agent.runtime import AgentRuntime

    with AgentRuntime(get_settings()) as runtime:
        try:
            render_approval(console, runtime.find_pending(approval_id))
        except KeyError as exc:
            _error(exc.args[0])
            raise typer.Exit(1) from exc


def _decide(approval_id: str, action: str, reason: str | None, reviewer_id: str | None, reviewer_name: str | None) -> None:
    from agent.cli_review import ProgressDisplay, default_reviewer, render_outcomes
    from agent.review import DecisionError, build_decision
    from agent.runtime import AgentRuntime

    settings = get_settings()
    try:
        decision = build_decision(action, *default_reviewer(settings, reviewer_id, reviewer_name), reason)
    except DecisionError as exc:
        _error(exc)
        raise typer.Exit(2) from exc
    with AgentRuntime(settings) as runtime:
        try:
            pending = runtime.find_pending(approval_id)
        except KeyError as exc:
            _error(exc.args[0])
            raise typer.Exit(1) from exc
        with ProgressDisplay(console) as on_progress:
            report = runtime.decide(pending.thread_id, {pending.interrupt_id: decision}, on_progress=on_progress)
    render_outcomes(console, report)


@approvals_app.command("approve")
def approvals_approve(
    approval_id: Annotated[str, typer.Argument(help="Approval id (a unique prefix), result UID or ImagingStudy id.")],
    reviewer_id: ReviewerId = None,
    reviewer_name: ReviewerName = None,
) -> None:
    """Approve: the results are stored in the PACS and reported in FHIR."""
    _decide(approval_id, "approve", None, reviewer_id, reviewer_name)


@approvals_app.command("reject")
def approvals_reject(
    approval_id: Annotated[str, typer.Argument(help="Approval id (a unique prefix), result UID or ImagingStudy id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the FHIR Task).")],
    reviewer_id: ReviewerId = None,
    reviewer_name: ReviewerName = None,
) -> None:
    """Reject with a reason: nothing is written to the PACS; the Task records the decision."""
    _decide(approval_id, "reject", reason, reviewer_id, reviewer_name)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
