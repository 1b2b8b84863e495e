"""The `imaging-agent` command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agent import services
from agent.settings import get_settings

console = Console()
app = typer.Typer(
    help="imaging-agent: AI results between PACS and EHR, with radiologist approval before every write.",
    no_args_is_help=True,
    add_completion=False,
)
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


def _print_status(rows: list[services.ServiceStatus]) -> None:
    table = Table("service", "state", "pid", "health URL", "log")
    for row in rows:
        state = "[green]up[/green]" if row.healthy else f"[red]{row.detail}[/red]"
        table.add_row(row.name, state, str(row.pid or "-"), row.url, str(row.log_file))
    console.print(table)


@services_app.command("up")
def services_up() -> None:
    """Start Orthanc and the FHIR server (or find them running) and wait until both answer."""
    settings = get_settings()
    try:
        rows = services.up(settings)
    except services.ServiceError as exc:
        console.print(f"[red]error:[/red] {exc}")
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
        console.print(f"[red]error:[/red] {exc}")
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

    from tools.fhir.client import FhirClient
    from tools.fhir.errors import FhirError
    from tools.fhir.worklist import find_worklist
    from tools.http_retry import ServiceUnavailableError

    settings = get_settings()
    try:
        with FhirClient.from_settings(settings) as fhir:
            items = find_worklist(fhir, dict(parse_qsl(query)) if query else None)
    except (FhirError, ServiceUnavailableError) as exc:
        console.print(f"[red]error:[/red] {exc}")
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
