"""The approval card: its components, the values that show or hide it, and the reviewer's form.

The chat and the approvals tab each have one card; both turn the form into a decision through
`agent.review` (the same check as the CLI's).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from agent.review import build_decision
from agent.ui.markdown import Card, card_findings_markdown, card_summary_markdown, card_writes_markdown
from tools.workflow.approval import ApprovalDecision

log = logging.getLogger(__name__)


@dataclass
class CardView:
    """The components of one approval card (the chat and the approvals tab each have one)."""

    group: gr.Column
    summary: gr.Markdown
    previews: gr.Gallery
    findings: gr.Markdown
    writes: gr.Markdown
    reviewer: gr.Textbox
    reason: gr.Textbox
    approve: gr.Button
    reject: gr.Button
    notice: gr.Markdown

    @property
    def content(self) -> list[Any]:
        """The outputs `card_updates` fills, in its order."""
        return [self.group, self.summary, self.previews, self.findings, self.writes]


def card_view(prefix: str, reviewer_name: str | None) -> CardView:
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
            reviewer = gr.Textbox(label="Reviewer name", value=reviewer_name or "", elem_id=f"{prefix}-reviewer")
            reason = gr.Textbox(label="Reason (required to reject)", elem_id=f"{prefix}-reason")
        with gr.Row():
            approve_button = gr.Button("Approve and write", variant="primary", elem_id=f"{prefix}-approve")
            reject_button = gr.Button("Reject", variant="stop", elem_id=f"{prefix}-reject")
    notice = gr.Markdown(elem_id=f"{prefix}-notice")
    return CardView(group, summary, previews, findings, writes, reviewer, reason, approve_button, reject_button, notice)


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


def reviewer_id_for(name: str) -> str:
    """A stable id from the name typed in the UI ("Dr. Ana Lee" -> "dr-ana-lee")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "reviewer"


def form_decision(action: str, reviewer: str | None, reason: str | None) -> ApprovalDecision:
    """The card's form as a decision; raises `agent.review.DecisionError` saying what is missing."""
    name = (reviewer or "").strip()
    return build_decision(action, reviewer_id_for(name), name, reason)
