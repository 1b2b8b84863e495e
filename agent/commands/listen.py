"""`imaging-agent listen`: the agent's DICOM node; complete series become jobs waiting for approval."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from agent.commands import output
from agent.settings import get_settings

# How often the inbox is looked at for complete series: well under any sensible stable age.
_POLL_S = 1.0


def listen(
    ae_title: Annotated[str | None, typer.Option("--ae", help="The node's AE title (default from settings: IMAGING_AGENT).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default from settings: 11112).")] = None,
) -> None:
    """Receive DICOM (C-ECHO, C-STORE) from the configured senders and start a job for each complete series."""
    from agent.intake import Intake, storage_node
    from agent.runtime import AgentRuntime
    from tools.intake.inbox import Inbox

    settings = get_settings()
    updates = {k: v for k, v in (("intake_ae_title", ae_title), ("intake_port", port)) if v is not None}
    settings = settings.model_copy(update=updates)
    if not settings.intake_peers:
        output.error(
            "no sender may store: IMAGING_AGENT_INTAKE_PEERS is empty. Set it, e.g. "
            '[{"ae_title": "CT_SCANNER", "host": "10.0.0.5"}], and start again.'
        )
        raise typer.Exit(2)
    inbox = Inbox(settings.intake_dir)
    node = storage_node(settings, inbox)
    with AgentRuntime(settings) as runtime:
        try:
            bound = node.start(settings.intake_host, settings.intake_port)
        except OSError as exc:
            output.error(f"cannot listen on {settings.intake_host}:{settings.intake_port}: {exc.strerror}; choose another --port")
            raise typer.Exit(1) from exc
        peers = ", ".join(f"{p.ae_title}@{p.host}" for p in settings.intake_peers)
        output.console.print(
            f"DICOM node {settings.intake_ae_title} on {settings.intake_host}:{bound}"
            f"{' (TLS)' if settings.intake_tls_cert else ''}; senders: {peers}; inbox {settings.intake_dir}",
            markup=False, soft_wrap=True,
        )
        intake = Intake(settings, runtime, inbox)
        try:
            while True:
                for event in intake.poll():
                    if event.error:
                        output.error(event.error)
                    elif event.job_thread_id:
                        output.console.print(
                            f"{event.taken.detail if event.taken else ''}: job {event.job_thread_id}, "
                            f"{event.pending_approvals} approval(s) waiting (imaging-agent approvals list)",
                            markup=False, soft_wrap=True,
                        )
                    elif event.taken:
                        output.console.print(event.taken.detail, markup=False, soft_wrap=True)
                time.sleep(_POLL_S)
        except KeyboardInterrupt:
            output.console.print("stopped")
        finally:
            node.stop()
