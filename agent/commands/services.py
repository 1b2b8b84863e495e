"""`imaging-agent services up|down|status`: the local Orthanc and FHIR server (and PostgreSQL, Redis)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from agent.commands import output
from agent.settings import get_settings

# agent.services pulls in httpx for its health checks; every other command starts without it.
if TYPE_CHECKING:
    from agent import services

services_app = typer.Typer(
    help="Start, stop and inspect the local Orthanc (PACS) and FHIR server (with --scale: PostgreSQL, Redis).",
    no_args_is_help=True,
)


def print_status(rows: list[services.ServiceStatus]) -> None:
    # One block per service, not a table: a table cuts URLs and paths to fit 80 columns, and a
    # newcomer needs them whole. soft_wrap leaves long lines to the terminal, so they copy whole.
    for row in rows:
        state = f"[green]up[/green] (pid {row.pid})" if row.healthy else f"[red]{escape(row.detail)}[/red]"
        output.console.print(f"[bold]{escape(row.name)}[/bold]: {state}", soft_wrap=True)
        output.console.print(f"  health URL: {escape(row.url)}", soft_wrap=True)
        output.console.print(f"  log:        {escape(str(row.log_file))}", soft_wrap=True)


@services_app.command("up")
def services_up(
    scale: Annotated[bool, typer.Option("--scale", help="Also PostgreSQL 15 (state) and Redis (broker), on 127.0.0.1.")] = False,
) -> None:
    """Start Orthanc and the FHIR server (or find them running) and wait until both answer."""
    from agent import services

    settings = get_settings()
    try:
        rows = services.up(settings, scale=scale)
    except services.ServiceError as exc:
        output.error(exc)
        raise typer.Exit(1) from exc
    print_status(rows)
    output.console.print(f"DICOMweb: {settings.dicomweb_url}   FHIR: {settings.fhir_url}")
    if scale:
        url_file = services.database_url_file(settings)
        # The URL holds the database password: point at its 0600 file rather than print it.
        output.console.print(
            f"PostgreSQL: to keep the state there, set IMAGING_AGENT_DATABASE_URL to the URL in {escape(str(url_file))}, "
            f'e.g. export IMAGING_AGENT_DATABASE_URL="$(cat {escape(str(url_file))})"',
            soft_wrap=True,
        )
        broker_file = services.broker_url_file(settings)
        output.console.print(
            f"Redis: for workers, set IMAGING_AGENT_BROKER_URL to the URL in {escape(str(broker_file))}, "
            f'e.g. export IMAGING_AGENT_BROKER_URL="$(cat {escape(str(broker_file))})", and run `imaging-agent worker`',
            soft_wrap=True,
        )


@services_app.command("down")
def services_down() -> None:
    """Stop the servers started by `services up` (by their PID files, nothing else)."""
    from agent import services

    for name, was_running in services.down(get_settings()):
        output.console.print(f"{name}: {'stopped' if was_running else 'was not running'}")


@services_app.command("status")
def services_status() -> None:
    """Show what runs where."""
    from agent import services

    rows = services.status(get_settings())
    print_status(rows)
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)
