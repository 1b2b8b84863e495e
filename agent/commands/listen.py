"""`imaging-agent listen`: the agent's DICOM node; complete series become jobs waiting for approval."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from agent.commands import output
from agent.settings import get_settings

if TYPE_CHECKING:
    from agent.intake import IntakeEvent


def listen(
    ae_title: Annotated[str | None, typer.Option("--ae", help="The node's AE title (default from settings: IMAGING_AGENT).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default from settings: 11112).")] = None,
) -> None:
    """Receive DICOM (C-ECHO, C-STORE) from the configured senders and start a job for each complete series."""
    from agent.intake import DicomNode
    from agent.runtime import AgentRuntime

    settings = get_settings()
    updates = {k: v for k, v in (("intake_ae_title", ae_title), ("intake_port", port)) if v is not None}
    settings = settings.model_copy(update=updates)
    with AgentRuntime(settings) as runtime:
        try:
            node = DicomNode(settings, runtime, _print_event)
            bound = node.start()
        except ValueError as exc:
            output.error(exc)
            raise typer.Exit(2) from exc
        except OSError as exc:
            output.error(f"cannot listen on {settings.intake_host}:{settings.intake_port}: {exc.strerror}; choose another --port")
            raise typer.Exit(1) from exc
        peers = ", ".join(f"{p.ae_title}@{p.host}" for p in settings.intake_peers)
        output.console.print(
            f"DICOM node {settings.intake_ae_title} on {settings.intake_host}:{bound}"
            f"{' (TLS)' if settings.intake_tls_cert else ''}; senders: {peers}; inbox {settings.intake_dir}",
            markup=False, soft_wrap=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            output.console.print("stopped")
        finally:
            node.stop()


def _print_event(event: IntakeEvent) -> None:
    if event.error:
        output.error(event.error)
    elif event.job_thread_id and event.taken:
        output.console.print(
            f"{event.taken.detail}: job {event.job_thread_id}, {event.pending_approvals} approval(s) waiting "
            "(imaging-agent approvals list)",
            markup=False, soft_wrap=True,
        )
    elif event.taken:
        output.console.print(event.taken.detail, markup=False, soft_wrap=True)
