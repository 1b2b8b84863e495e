"""`imaging-agent contour` and `train`: work on local files and the learning loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agent.commands import output
from agent.parts import fhir_client
from agent.settings import get_settings
from agent.untrusted import terminal_text as cell


def contour(
    dicom_dir: Annotated[Path, typer.Argument(help="Folder with one CT series.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (must be new or empty).")],
    engine: Annotated[str | None, typer.Option(help=output.ENGINE_HELP)] = None,
    formats: Annotated[
        str,
        typer.Option(
            help="Comma-separated: rtstruct,seg,sr,png,json, and optionally overlay (secondary-capture images, "
            "NOT FOR DIAGNOSIS) and ko (a Key Object Selection of the DICOM objects); report.txt is always written."
        ),
    ] = "rtstruct,seg,sr,png,json",
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Contour the lungs of a local series, offline: RTSTRUCT, SEG, SR, previews and summary.json."""
    from rich.progress import Progress

    from agent.contour import ContourError, run_contour
    from agent.parts import engine_catalog
    from tools.results.package import ALL_FORMATS, OPTIONAL_FORMATS
    from tools.segmentation.base import EngineError
    from tools.workflow.failure import StudyFailure
    from tools.workflow.segment import engine_chain

    wanted = [f.strip().lower() for f in formats.split(",") if f.strip()]
    known = (*ALL_FORMATS, *OPTIONAL_FORMATS)
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        output.error(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(known)}.")
        raise typer.Exit(2)
    if "sr" in wanted and "seg" not in wanted:
        output.error("the SR references the SEG: ask for 'seg' too, or leave 'sr' out of --formats.")
        raise typer.Exit(2)
    settings = get_settings()
    with Progress(console=output.console, transient=True) as bar:
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
            output.error(exc)
            raise typer.Exit(1) from exc
    table = Table("structure", "volume", "mean HU", "components", "confidence")
    for s in package.structures:
        m = s.measurements
        table.add_row(cell(s.display), f"{m.volume_ml:.1f} mL", f"{m.mean_hu or 0:.0f}", str(m.n_components), f"{s.confidence:.2f}")
    output.console.print(table)
    for reason in not_used:
        output.console.print(f"[yellow]engine not used[/yellow] {escape(reason)}")
    for flag in package.flags:
        output.console.print(f"[yellow]{flag.severity}[/yellow] {escape(flag.message)}")
    for obj in package.objects:
        output.console.print(cell(f"{obj.kind:<8} {obj.path}  sha256 {obj.sha256[:16]}…"))
    if package.previews:
        output.console.print(cell(f"previews: {len(package.previews)} PNG in {package.out_dir / 'previews'}"))
    output.console.print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in package.seconds.items()))


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
    from tools.segmentation.bundle_trust import bundle_sha256
    from tools.training.config import TrainConfig, TrainingError
    from tools.training.gather import gather_cases
    from tools.training.network import case_pixdim
    from tools.training.train import train as run_training

    settings = get_settings()
    cases = cases_dir or out / "cases"
    config = TrainConfig(
        epochs=epochs, val_fraction=val_fraction, min_cases=min_cases, from_bundle=from_bundle, device=settings.torch_device
    )
    try:
        if gather:
            with Progress(console=output.console, transient=True) as bar:
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
            output.console.print(
                f"{len(report.pairs)} case(s) in {cases} ({reused} already there) from {report.studies_scanned} "
                f"stud{'y' if report.studies_scanned == 1 else 'ies'}; {len(report.skipped)} label series skipped"
            )
            for skipped in report.skipped:
                output.console.print(f"[yellow]skipped[/yellow] {escape(str(skipped))}")
        result = run_training(cases, out, config, resume=resume)
    except (ServiceUnavailableError, PacsError, FhirError, TrainingError, EngineError, ValueError) as exc:
        output.error(exc)
        raise typer.Exit(1) from exc
    table = Table("structure", "held-out Dice")
    for key, dice in result.dice.items():
        table.add_row(key, f"{dice:.3f}")
    output.console.print(table)
    output.console.print(
        f"epochs {result.first_epoch}-{result.last_epoch} on {len(result.train_cases)} case(s), "
        f"{len(result.val_cases)} held out, {result.seconds:.0f} s"
    )
    # A bundle is code: the engine loads it only with this pin (tools/segmentation/bundle_trust.py).
    output.console.print(
        f"bundle {result.version} in {result.bundle_dir}: set IMAGING_AGENT_MONAI_BUNDLE_DIR={result.bundle_dir} "
        f"and IMAGING_AGENT_MONAI_BUNDLE_SHA256={bundle_sha256(result.bundle_dir)}, and use --engine monai-bundle"
    )
