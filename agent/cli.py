"""The `imaging-agent` command line: the app, its global options, and the subcommands of agent/commands/."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from pydantic import ValidationError

from agent.commands import audit, evaluate, identity, jobs, listen, offline, output, purge, view, worker, worklist
from agent.commands.approvals import approvals_app
from agent.commands.identity import users_app
from agent.commands.services import services_app
from agent.memory import keep_large_blocks_out_of_the_heap
from agent.private_files import protect_run_dir
from agent.settings import Settings, get_settings
from agent.telemetry import configure_tracing
from tools.state.database import StateDatabaseError

app = typer.Typer(
    help="imaging-agent: AI results between PACS and EHR, with radiologist approval before every write.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(services_app, name="services")
for command in (worklist.seed, worklist.pending, offline.contour, offline.train, jobs.process, jobs.ask):
    app.command()(command)
app.add_typer(approvals_app, name="approvals")
app.add_typer(users_app, name="users")
for command in (identity.login, identity.logout, identity.serve):
    app.command()(command)
app.command()(purge.purge)
app.command()(listen.listen)
app.command()(audit.audit)
app.command(name="eval")(evaluate.evaluate)
app.command()(worker.worker)
app.command()(view.view)


@app.callback()
def _configure(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The run directory holds PHI and secrets: 0700, and what this process writes, 0600.
    protect_run_dir(get_settings().run_dir)
    # httpx and urllib3 log full URLs with their query strings, which can hold patient names.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    # Before any client is built: spans of the jobs this command runs (or a worker's pool runs), when
    # OTEL_EXPORTER_OTLP_ENDPOINT is set.
    configure_tracing(get_settings(), ctx.invoked_subcommand or "imaging-agent")


@app.command()
def ui(port: Annotated[int | None, typer.Option("--port", help="Port (default from settings: 8000).")] = None) -> None:
    """Serve the web app (chat, approvals, jobs) at /ui of the service, behind its sign-in."""
    import app as web

    web.main(get_settings(), port)


def main() -> None:
    keep_large_blocks_out_of_the_heap()
    try:
        app()
    except StateDatabaseError as exc:
        output.error(exc)
        raise SystemExit(1) from None
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise
        output.error(f"the settings (environment or .env) are not valid: {exc}; see .env.example")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
