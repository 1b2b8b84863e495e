"""The app's page: header, the Chat / Approvals / Jobs tabs, and the periodic refresh."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
from langchain_core.language_models import BaseChatModel

from agent.runtime import AgentRuntime
from agent.settings import Settings
from agent.ui.approvals_tab import ApprovalsTab
from agent.ui.cards import NOT_SIGNED_IN, Identify, nobody
from agent.ui.chat_tab import ChatTab
from agent.ui.markdown import jobs_markdown, planner_markdown, readable_error
from agent.ui.services_check import check_services, services_markdown
from agent.ui.session import BUSY_WAIT_S, LockedGraphs
from agent.untrusted import markdown_literal

log = logging.getLogger(__name__)

REFRESH_EVERY_S = 10.0


def build_app(
    settings: Settings, runtime: AgentRuntime, model: BaseChatModel | None = None, identify: Identify = nobody
) -> gr.Blocks:
    """The app over `runtime`; `model` defaults to the planner the settings choose.

    `identify` names the signed-in principal behind each event (the service's sign-in, see
    `agent/api/oidc_routes.py`); the default, `nobody`, lets the app show but decide nothing."""
    graphs = LockedGraphs(runtime, model)
    with gr.Blocks(title="imaging-agent", analytics_enabled=False) as demo:
        gr.Markdown(
            "# imaging-agent\nAI lung contours from the PACS to the EHR, written only after a radiologist approves."
        )
        signed_in = gr.Markdown(elem_id="signed-in")
        _header(demo, settings)
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                chat = ChatTab(graphs, settings.signing_window_s, identify)
            with gr.Tab("Approvals", id="approvals"):
                approvals = ApprovalsTab(graphs, settings.signing_window_s, identify)
            with gr.Tab("Jobs", id="jobs"):
                jobs = JobsTab(graphs)
        _show_signer(demo, identify, [signed_in, chat.view.signed_in, approvals.view.signed_in])
        timer = gr.Timer(REFRESH_EVERY_S)
        jobs.load_on(demo)
        approvals.load_on(demo)
        _refresh_periodically(timer, approvals, jobs)
    return demo


def _show_signer(demo: gr.Blocks, identify: Identify, lines: list[gr.Markdown]) -> None:
    """Who signs this page's decisions: at the top (with a way out) and on each card."""

    def show(request: gr.Request) -> list[str]:
        principal = identify(request)
        if principal is None:
            return ["", *[f"Reviewer: {NOT_SIGNED_IN}" for _ in lines[1:]]]
        # The name comes from the identity provider: shown as text, never as Markdown.
        name = markdown_literal(principal.display_name)
        roles = ", ".join(sorted(principal.roles))
        top = (
            f"Signed in as **{name}** ({roles}). [Sign in again](/login?fresh=1) to sign approvals after a "
            "while; [sign out](/logout)."
        )
        who = f"{markdown_literal(principal.id)}, {markdown_literal(principal.issuer)}"
        return [top, *[f"Reviewer: **{name}** ({who})" for _ in lines[1:]]]

    demo.load(show, outputs=lines, show_progress="hidden")


def _header(demo: gr.Blocks, settings: Settings) -> None:
    """The planner in use and whether PACS and FHIR answer (checked on load and on request)."""
    with gr.Row(equal_height=True):
        with gr.Column(scale=5):
            gr.Markdown(planner_markdown(settings), elem_id="planner-status")
            status = gr.Markdown("Checking PACS and FHIR…", elem_id="services-status")
        refresh = gr.Button("Refresh status", scale=1, elem_id="status-refresh")

    def refresh_status() -> str:
        return services_markdown(check_services(settings))

    demo.load(refresh_status, outputs=status, show_progress="hidden")
    refresh.click(refresh_status, outputs=status)


class JobsTab:
    """Every job, newest first, with each study's outcome, read from the durable store."""

    def __init__(self, graphs: LockedGraphs) -> None:
        self.graphs = graphs
        self.refresh_button = gr.Button("Refresh", elem_id="jobs-refresh")
        self.view = gr.Markdown("Loading…", elem_id="jobs")
        self.refresh_button.click(self.refresh, outputs=self.view)

    def load_on(self, demo: gr.Blocks) -> None:
        demo.load(self.refresh, outputs=self.view, show_progress="hidden")

    def refresh(self, wait_s: float = BUSY_WAIT_S) -> Any:
        try:
            return jobs_markdown(*self.graphs.jobs(wait_s))
        except TimeoutError:
            return gr.skip()
        except Exception as exc:
            return f"⚠ Could not read the jobs: {readable_error(exc)}"


def _refresh_periodically(timer: gr.Timer, approvals: ApprovalsTab, jobs: JobsTab) -> None:
    def tick(selected: str | None, flag: str | None, engine: str | None, modality: str | None) -> list[Any]:
        # A tick never waits for a running chat: it skips and the next one tries again.
        try:
            return [*approvals.refresh_quietly(selected, flag, engine, modality), jobs.refresh(wait_s=0)]
        except Exception as exc:
            log.warning("periodic refresh failed: %s", exc)
            return [gr.skip() for _ in range(len(approvals.listing) + 1)]

    timer.tick(tick, approvals.list_inputs, [*approvals.listing, jobs.view], show_progress="hidden")
