"""`imaging-agent view OUT_DIR`: the reviewer's viewer over an offline `contour` result, locally."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.commands import output

HOST = "127.0.0.1"


def view(
    out_dir: Annotated[Path, typer.Argument(help="A folder written by `imaging-agent contour`.")],
    ct: Annotated[
        Path | None, typer.Option("--ct", help="The CT series folder (default: the one summary.json records).")
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Local port to serve the viewer on.")] = 7861,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open it in the default browser.")] = True,
) -> None:
    """Show an offline result's contours on every slice of its CT (read-only, on 127.0.0.1, no sign-in)."""
    from agent.ui.folder_viewer import THEME, build_folder_viewer, folder_source, open_folder
    from tools.review.scene import SceneCache, SceneError

    source = folder_source(out_dir, ct)
    scenes = SceneCache(open_folder, size=1)
    try:
        # Opened here, so a wrong folder is said at once and not on a page.
        scenes.get(source)
    except SceneError as exc:
        output.error(exc)
        raise typer.Exit(1) from exc
    demo = build_folder_viewer(source, scenes)
    output.console.print(f"Viewer of {out_dir} at http://{HOST}:{port}/ (Ctrl+C to stop)")
    demo.launch(
        server_name=HOST, server_port=port, inbrowser=open_browser, theme=THEME, footer_links=[], quiet=True
    )
