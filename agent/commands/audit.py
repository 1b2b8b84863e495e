"""`imaging-agent audit STUDY_UID`: the chain from received instances to stored results, from the index."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agent.commands import output
from agent.settings import get_settings
from agent.untrusted import terminal_text


def audit(
    study_instance_uid: Annotated[str, typer.Argument(help="The DICOM Study Instance UID.")],
    inputs: Annotated[bool, typer.Option("--inputs", help="List every source instance with its sha256.")] = False,
) -> None:
    """Which source instances produced which stored results, who approved them, when and where they went."""
    from agent.parts import migrated_database
    from tools.ids import UnsafeIdentifierError, check_dicom_uid
    from tools.workflow.lineage import LineageStore

    try:
        check_dicom_uid(study_instance_uid, "the study given")
    except UnsafeIdentifierError as exc:
        output.error(exc)
        raise typer.Exit(2) from exc
    with migrated_database(get_settings()) as engine:
        chains = LineageStore(engine).chains(study_instance_uid)
    if not chains:
        output.error(
            f"no stored result of study {study_instance_uid} is indexed here: nothing was approved and stored for it "
            "through this database (IMAGING_AGENT_DATABASE_URL / the run directory), or the UID is another study's"
        )
        raise typer.Exit(1)
    table = Table("result", "SOP Instance UID", "sha256 (approved)", "approved by", "at", "stored", "where", "from")
    for chain in chains:
        who = f"{chain.approved_by_name} ({chain.approved_by} at {chain.approved_by_issuer})"
        if chain.automatic:
            who += " — automatic (--yes), not reviewed"
        series = sorted({i.series_instance_uid for i in chain.inputs})
        table.add_row(
            chain.kind, chain.sop_instance_uid, chain.sha256, terminal_text(who),
            f"{chain.approved_at:%Y-%m-%d %H:%M:%S}", f"{chain.stored_at:%Y-%m-%d %H:%M:%S}", terminal_text(chain.destination),
            f"{len(chain.inputs)} instances of series {', '.join(series)}",
        )
    output.console.print(table)
    if inputs:
        source = Table("source SOP Instance UID", "series", "sha256 (as kept after retrieval)")
        every = {(i.sop_instance_uid, i.sha256): i for chain in chains for i in chain.inputs}
        for instance in sorted(every.values(), key=lambda i: i.sop_instance_uid):
            source.add_row(instance.sop_instance_uid, instance.series_instance_uid, instance.sha256)
        output.console.print(source)
