"""`imaging-agent purge`: delete the work files (PHI at rest) of finished jobs after the retention period."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from agent.commands import output
from agent.settings import get_settings


def purge(
    older_than: Annotated[
        float | None,
        typer.Option("--older-than", min=0, help="Days; default IMAGING_AGENT_RETENTION_DAYS."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
) -> None:
    """Delete work folders (DICOM copies, volumes, masks, results) not touched for DAYS days.

    A folder an unfinished job still uses (a pending approval, a job to resume) is always kept.
    """
    from agent.runtime import AgentRuntime
    from graphs.retention import work_folders_in_use
    from tools.workflow.retention import purge_work

    settings = get_settings()
    days = older_than if older_than is not None else settings.retention_days
    if days is None:
        output.error("how old must work files be to go? Pass --older-than DAYS or set IMAGING_AGENT_RETENTION_DAYS.")
        raise typer.Exit(2)
    work_root = settings.work_root
    with AgentRuntime(settings) as runtime:
        in_use = work_folders_in_use(runtime, work_root)
        report = purge_work(work_root, days, in_use, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for folder in report.deleted:
        output.console.print(f"{verb} {escape(str(folder))}")
    for folder in report.kept_in_use:
        output.console.print(f"kept {escape(str(folder))}: an unfinished job (pending approval or resume) uses it")
    output.console.print(
        f"{verb} {len(report.deleted)} work folder(s), {report.bytes_freed / 1e6:.1f} MB older than {days:g} day(s); "
        f"kept {len(report.kept_in_use)} in use and {len(report.kept_recent)} recent"
    )
