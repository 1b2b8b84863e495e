"""The approvals tab: every pending approval in the durable store, from any job, answered here.

Jobs started in a chat, in the CLI or from Python all wait in the same store; a decision made
here resumes the job through `AgentRuntime.decide`, exactly as `imaging-agent approvals` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from agent.review import DecisionError
from agent.ui.cards import CARD_CONTENT, CardView, Identify, card_updates, card_view, form_decision, nobody
from agent.ui.markdown import approval_choice, outcomes_markdown, progress_log, readable_error
from agent.ui.session import BUSY_WAIT_S, LockedGraphs
from agent.untrusted import markdown_literal
from graphs.chat import approval_card
from graphs.runtime import RunReport


class ApprovalsTab:
    """The list of pending approvals, the card of the one chosen, and its Approve / Reject."""

    def __init__(self, graphs: LockedGraphs, signing_window_s: float, identify: Identify = nobody) -> None:
        self.graphs = graphs
        self.signing_window_s = signing_window_s
        self.identify = identify
        with gr.Row():
            self.pending_list = gr.Dropdown(
                label="Pending approvals (all jobs: chat, CLI and Python)", choices=[], value=None,
                scale=6, elem_id="pending-list",
            )
            self.refresh = gr.Button("Refresh", scale=1, elem_id="approvals-refresh")
        self.view: CardView = card_view("panel")
        self._wire()

    def _wire(self) -> None:
        self.refresh.click(self.refresh_list, self.pending_list, [self.pending_list, self.view.notice])
        self.pending_list.change(
            self.show_pending, self.pending_list, [*self.view.content, self.view.notice], show_progress="hidden"
        )
        inputs = [self.pending_list, self.view.reason, self.view.viewer.edits]
        outputs = [self.pending_list, *self.view.content, self.view.notice]
        self.view.approve.click(self.on_decision("approve"), inputs, outputs)
        self.view.reject.click(self.on_decision("reject"), inputs, outputs)
        self.view.save_edits.click(self.on_decision("modify"), inputs, outputs)

    def load_on(self, demo: gr.Blocks) -> None:
        """Fill the list when a page opens."""
        demo.load(self.refresh_list, self.pending_list, [self.pending_list, self.view.notice], show_progress="hidden")

    def choices(self, selected: str | None, wait_s: float = BUSY_WAIT_S) -> Any:
        """The list's new choices, keeping the selection while it is still pending; skipped while busy."""
        try:
            pending = self.graphs.pending(wait_s)
        except TimeoutError:
            return gr.skip()
        choices = [approval_choice(p) for p in pending]
        keep = selected if selected in {value for _, value in choices} else None
        return gr.update(choices=choices, value=keep)

    def refresh_list(self, selected: str | None) -> tuple[Any, str]:
        try:
            update = self.choices(selected)
        except Exception as exc:
            return gr.skip(), f"⚠ Could not list the approvals: {readable_error(exc)}"
        if isinstance(update, dict) and not update.get("choices"):
            return update, "No approval is waiting."
        return update, ""

    def show_pending(self, interrupt_id: str | None) -> list[Any]:
        if not interrupt_id:
            return [*card_updates(None), gr.update()]
        try:
            matches = [p for p in self.graphs.pending() if p.interrupt_id == interrupt_id]
        except Exception as exc:
            return [*card_updates(None), f"⚠ Could not read the approval: {readable_error(exc)}"]
        if not matches:
            return [*card_updates(None), "That approval is no longer pending; refresh the list."]
        return [*card_updates(approval_card(matches[0])), ""]

    def on_decision(self, action: str) -> Callable[..., Iterator[list[Any]]]:
        """The Approve, Reject or Save-edits handler: progress lines while the job writes, then its outcome."""

        def handler(
            interrupt_id: str | None, reason: str, edits: list[dict[str, Any]], request: gr.Request
        ) -> Iterator[list[Any]]:
            unchanged = [gr.update() for _ in range(1 + CARD_CONTENT)]  # the list and the card's components
            if not interrupt_id:
                yield [*unchanged, "Choose an approval from the list first."]
                return
            try:
                decision = form_decision(
                    action, self.identify(request), reason, edits, signing_window_s=self.signing_window_s
                )
            except DecisionError as exc:
                yield [*unchanged, f"⚠ {exc}"]
                return
            lines: dict[str, str] = {}
            outcome = ""
            for event in self.graphs.decide(interrupt_id, decision):
                if event.kind == "item":
                    progress = event.payload[1]
                    lines[str(progress.get("imaging_study_id"))] = progress_log(progress)
                    yield [*unchanged, "\n\n".join(f"ImagingStudy/{markdown_literal(k)}: {v}" for k, v in lines.items())]
                elif event.kind == "card":
                    report: RunReport = event.payload
                    outcome = outcomes_markdown(report)
                    if report.running_elsewhere:  # recorded; the process that runs the job applies it
                        outcome = f"⚠ {markdown_literal(report.running_elsewhere)}\n\n{outcome}"
                    elif report.queued:  # recorded; a worker resumes the job (IMAGING_AGENT_BROKER_URL)
                        outcome = f"Recorded: job {markdown_literal(report.thread_id)} goes on on the first free worker."
                elif event.kind == "error":
                    outcome = f"⚠ {event.payload}"
            yield [self.choices(None), *card_updates(None), outcome]

        return handler
