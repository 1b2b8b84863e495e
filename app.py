"""The Gradio app's entry point: `python app.py` or `imaging-agent ui`.

The app itself lives in `agent/ui/` (page layout, chat and approvals tabs, approval cards,
rendering); this file only opens the runtime and serves the page until interrupted.
"""

from __future__ import annotations

from agent.llm import planner_info
from agent.runtime import AgentRuntime
from agent.settings import Settings, get_settings
from agent.ui.layout import build_app
from agent.ui.server import HOST, launch


def main(settings: Settings | None = None, port: int | None = None) -> None:
    """`imaging-agent ui`: serve the app until interrupted."""
    settings = settings or get_settings()
    with AgentRuntime(settings) as runtime:
        demo = build_app(settings, runtime)
        print(f"imaging-agent UI on http://{HOST}:{port or settings.ui_port}  ({planner_info(settings).description})")
        launch(demo, port or settings.ui_port)


if __name__ == "__main__":
    main()
