"""The web app's entry point: `python app.py` or `imaging-agent ui`.

The app itself lives in `agent/ui/` (page layout, chat and approvals tabs, approval cards,
rendering). It is served only behind the service's sign-in (`agent/api/`): the page shows patient
data and starts jobs, so no process serves it to whoever can reach the port.
"""

from __future__ import annotations

from agent.api.server import run
from agent.llm import planner_info
from agent.settings import Settings, get_settings


def main(settings: Settings | None = None, port: int | None = None) -> None:
    """`imaging-agent ui`: the service with the app at /ui, until interrupted."""
    settings = settings or get_settings()
    port = port or settings.api_port
    print(
        f"imaging-agent web app on http://{settings.api_host}:{port}/ui (sign in there; "
        f"{planner_info(settings).description})"
    )
    run(settings, settings.api_host, port)


if __name__ == "__main__":
    main()
