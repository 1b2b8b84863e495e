"""What every subcommand shares: the console, the error line, option types and help texts."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tools.segmentation.catalog import engine_names

console = Console()

# The engine names come from the catalog, so --help lists exactly the engines that exist.
ENGINE_HELP = f"Segmentation engine: {', '.join(engine_names())} (default from settings)."

ApprovalId = Annotated[str, typer.Argument(help="Approval id, result UID or ImagingStudy id, given whole.")]


def error(exc: object) -> None:
    # Messages carry paths and server text; brackets in them must not be read as markup.
    console.print(f"[red]error:[/red] {escape(str(exc))}")
