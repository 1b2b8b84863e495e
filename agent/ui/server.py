"""Serving the app: 127.0.0.1 only, because it shows patient data and has no login."""

from __future__ import annotations

import gradio as gr

HOST = "127.0.0.1"


def launch(demo: gr.Blocks, port: int, *, block: bool = True) -> None:
    """Serve on 127.0.0.1 only, with a theme that needs no web fonts (the app works offline)."""
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=HOST,
        server_port=port,
        prevent_thread_lock=not block,
        theme=theme,
        footer_links=[],
        show_error=False,
        quiet=True,
    )
