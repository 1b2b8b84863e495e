"""`imaging-agent seed` and `pending`: data into the PACS and FHIR, and the work list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agent.commands import output
from agent.parts import fhir_client
from agent.settings import get_settings
from agent.untrusted import markup_literal
from agent.untrusted import terminal_text as cell


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
        output.error(exc)
        raise typer.Exit(1) from exc
    table = Table("study", "patient", "series", "instances", "stored", "already in PACS", "ImagingStudy")
    for r in results:
        table.add_row(
            cell(r.study_instance_uid),
            cell(r.patient_id),
            str(r.series_count),
            str(r.instance_count),
            str(r.stored),
            str(r.already_present),
            cell(f"{r.imaging_study_id} ({'created' if r.imaging_study_created else 'existing'})"),
        )
    output.console.print(table)


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
        output.error(exc)
        raise typer.Exit(1) from exc
    table = Table("ImagingStudy", "Study Instance UID", "patient", "started", "modality", "series", "instances", "status")
    for item in items:
        table.add_row(
            cell(item.imaging_study_id),
            cell(item.study_instance_uid),
            cell(item.patient_reference),
            cell(item.started),
            cell(",".join(item.modalities)),
            str(item.number_of_series or "-"),
            str(item.number_of_instances or "-"),
            cell(item.status),
        )
    output.console.print(table)
    output.console.print(f"{len(items)} stud{'y' if len(items) == 1 else 'ies'} waiting at {markup_literal(settings.fhir_url)}")
