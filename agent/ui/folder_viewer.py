"""The read-only viewer of one offline `contour` result folder (`imaging-agent view OUT_DIR`).

A physicist checks a result without services: the same viewer as the approval card, without
editing or deciding, on the CT the folder was contoured from. Served on 127.0.0.1 only; it shows
one local folder to the person at this machine, so it asks for no sign-in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from agent.ui.viewer import Viewer
from tools.results.read_back import scene_from_folder
from tools.review.scene import Scene, SceneCache


def folder_source(out_dir: Path, ct_dir: Path | None) -> dict[str, Any]:
    return {"folder": str(out_dir.resolve()), "ct": str(ct_dir.resolve()) if ct_dir else None}


def open_folder(source: dict[str, Any]) -> Scene:
    return scene_from_folder(Path(source["folder"]), Path(source["ct"]) if source.get("ct") else None)


# The machine may be offline: no web fonts.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def build_folder_viewer(source: dict[str, Any], scenes: SceneCache) -> gr.Blocks:
    """The page: the folder's name and its viewer, opened when the page loads (from ``scenes``)."""
    with gr.Blocks(title=f"imaging-agent view {Path(source['folder']).name}", analytics_enabled=False) as demo:
        gr.Markdown(f"### {source['folder']}\nRead-only: the contours as written, on the series they were drawn on.")
        with gr.Column(elem_id="view-card", elem_classes=["review-card"]):
            viewer = Viewer("view", scenes, editable=False)
        demo.load(lambda: source, outputs=viewer.source, show_progress="hidden")
    return demo
