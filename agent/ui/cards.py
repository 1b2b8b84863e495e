"""The approval card: its components, the values that show or hide it, and the reviewer's form.

The chat and the approvals tab each have one card; both turn the form into a decision through
`agent.review` (the same check as the CLI's and the API's). The reviewer is the browser
session's authenticated principal, never a name typed into the page: until the app is served
behind a sign-in, there is none, and the cards decide nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from agent.review import DecisionError, build_decision
from agent.ui.markdown import Card, card_findings_markdown, card_summary_markdown, card_writes_markdown
from tools.identity.principal import Principal
from tools.workflow.approval import ApprovalDecision
from tools.workflow.rejection_reasons import REJECTION_REASONS

log = logging.getLogger(__name__)


@dataclass
class CardView:
    """The components of one approval card (the chat and the approvals tab each have one)."""

    group: gr.Column
    summary: gr.Markdown
    previews: gr.Gallery
    findings: gr.Markdown
    writes: gr.Markdown
    signed_in: gr.Markdown
    reason: gr.Textbox
    approve: gr.Button
    reject: gr.Button
    notice: gr.Markdown
    reason_code: gr.Dropdown

    @property
    def content(self) -> list[Any]:
        """The outputs `card_updates` fills, in its order."""
        return [self.group, self.summary, self.previews, self.findings, self.writes]


NOT_SIGNED_IN = (
    "not signed in: approve or reject through `imaging-agent serve` (the API or `imaging-agent approvals` "
    "after `imaging-agent login`); this page cannot tell who you are"
)


def card_view(prefix: str) -> CardView:
    """A hidden card with element ids `{prefix}-card`, `{prefix}-approve`, ... and its notice line."""
    with gr.Column(visible=False, elem_id=f"{prefix}-card") as group:
        summary = gr.Markdown(elem_id=f"{prefix}-card-summary")
        previews = gr.Gallery(
            label="Contour previews", columns=4, height=300, format="png", interactive=False,
            elem_id=f"{prefix}-card-previews",
        )
        findings = gr.Markdown(elem_id=f"{prefix}-card-findings")
        writes = gr.Markdown(elem_id=f"{prefix}-card-writes")
        with gr.Row():
            signed_in = gr.Markdown(f"Reviewer: {NOT_SIGNED_IN}", elem_id=f"{prefix}-signed-in")
            reason_code = gr.Dropdown(
                label="Rejection reason", choices=[(display, code) for code, display in REJECTION_REASONS.items()],
                value=None, elem_id=f"{prefix}-reason-code",
            )
            reason = gr.Textbox(label="Reason (required to reject without a code, or with Other)", elem_id=f"{prefix}-reason")
        with gr.Row():
            approve_button = gr.Button("Approve and write", variant="primary", elem_id=f"{prefix}-approve")
            reject_button = gr.Button("Reject", variant="stop", elem_id=f"{prefix}-reject")
    notice = gr.Markdown(elem_id=f"{prefix}-notice")
    return CardView(
        group, summary, previews, findings, writes, signed_in, reason, approve_button, reject_button, notice,
        reason_code=reason_code,
    )


def load_previews(paths: Sequence[str]) -> list[Image.Image]:
    """The PNGs as images, so Gradio serves copies from its cache and never the run directory."""
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.copy())
        except OSError as exc:
            log.warning("preview %s cannot be read: %s", path, exc)
    return images


def card_updates(card: Card | None) -> list[Any]:
    """Values for CardView.content: the card shown, or the card hidden."""
    if card is None:
        return [gr.update(visible=False), "", None, "", ""]
    return [
        gr.update(visible=True),
        card_summary_markdown(card),
        load_previews(card["previews"]),
        card_findings_markdown(card),
        card_writes_markdown(card),
    ]


Identify = Callable[[gr.Request], Principal | None]
"""The authenticated principal behind a browser event, or None."""


def nobody(request: gr.Request | None) -> Principal | None:
    """The Blocks alone (`build_app` without the service) have no sign-in: nothing a page sends can name
    the reviewer, so decisions are refused rather than trusted. Served by `imaging-agent serve` / `ui`,
    the service's sign-in identifies each event instead (`agent/api/browser.py`, `LoginSessions.identify`)."""
    return None


def form_decision(
    action: str,
    principal: Principal | None,
    reason: str | None,
    *,
    signing_window_s: float,
    reason_code: str | None = None,
) -> ApprovalDecision:
    """The card's form as the principal's decision; raises `agent.review.DecisionError` saying what is wrong.

    `reason_code` (the rejection reason list) counts for a rejection only: an approval ignores it."""
    if principal is None:
        raise DecisionError(f"Nothing was decided: {NOT_SIGNED_IN}.")
    code = reason_code if action == "reject" else None
    return build_decision(action, principal, reason, signing_window_s=signing_window_s, reason_code=code)
