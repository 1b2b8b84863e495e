"""The approval card: its components, the values that show or hide it, and the reviewer's form.

The card shows the full series with the contours (agent/ui/viewer.py) over the volume and masks
the request names (`ReviewFiles`), and lets the reviewer correct them: "Save edits for approval"
sends the edit list as a decision with action "modify".

The chat and the approvals tab each have one card; both turn the form into a decision through
`agent.review` (the same check as the CLI's and the API's). The reviewer is the browser
session's authenticated principal, never a name typed into the page: until the app is served
behind a sign-in, there is none, and the cards decide nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image
from pydantic import ValidationError

from agent.review import DecisionError, build_decision
from agent.ui.markdown import Card, card_findings_markdown, card_summary_markdown, card_writes_markdown
from agent.ui.viewer import Viewer, parse_edits
from tools.identity.principal import Principal
from tools.review.scene import Scene, SceneCache, scene_from_work_store
from tools.workflow.approval import ApprovalDecision, ReviewFiles
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
    viewer: Viewer
    save_edits: gr.Button
    reason_code: gr.Dropdown

    @property
    def content(self) -> list[Any]:
        """The outputs `card_updates` fills, in its order."""
        return [self.group, self.summary, self.previews, self.findings, self.writes, self.viewer.source]


NOT_SIGNED_IN = (
    "not signed in: approve or reject through `imaging-agent serve` (the API or `imaging-agent approvals` "
    "after `imaging-agent login`); this page cannot tell who you are"
)


def open_review_files(source: dict[str, Any]) -> Scene:
    """The scene behind a card: its `ReviewFiles`, each file checked against its sha256."""
    files = ReviewFiles.model_validate(source)
    return scene_from_work_store(
        Path(files.volume_path), files.volume_sha256, Path(files.masks_path), files.masks_sha256
    )


# One cache for every card of the process: a chest CT and its masks take ~200 MB.
REVIEW_SCENES = SceneCache(open_review_files)


def card_view(prefix: str) -> CardView:
    """A hidden card with element ids `{prefix}-card`, `{prefix}-approve`, ... and its notice line."""
    with gr.Column(visible=False, elem_id=f"{prefix}-card", elem_classes=["review-card"]) as group:
        summary = gr.Markdown(elem_id=f"{prefix}-card-summary")
        viewer = Viewer(prefix, REVIEW_SCENES, editable=True)
        with gr.Row():
            signed_in = gr.Markdown(f"Reviewer: {NOT_SIGNED_IN}", elem_id=f"{prefix}-signed-in")
            reason_code = gr.Dropdown(
                label="Rejection reason", choices=[(display, code) for code, display in REJECTION_REASONS.items()],
                value=None, elem_id=f"{prefix}-reason-code",
            )
            reason = gr.Textbox(
                label="Reason (required to reject without a code, or with Other)", lines=1, elem_id=f"{prefix}-reason",
                elem_classes=["card-reason"],
            )
        with gr.Row():
            approve_button = gr.Button(
                "Approve and write", variant="primary", elem_id=f"{prefix}-approve", elem_classes=["card-approve"]
            )
            save_edits = gr.Button("Save edits for approval", elem_id=f"{prefix}-save-edits")
            reject_button = gr.Button("Reject", variant="stop", elem_id=f"{prefix}-reject", elem_classes=["card-reject"])
        findings = gr.Markdown(elem_id=f"{prefix}-card-findings")
        previews = gr.Gallery(
            label="Contour previews", columns=4, height=260, format="png", interactive=False,
            elem_id=f"{prefix}-card-previews",
        )
        writes = gr.Markdown(elem_id=f"{prefix}-card-writes")
    notice = gr.Markdown(elem_id=f"{prefix}-notice")
    return CardView(
        group, summary, previews, findings, writes, signed_in, reason, approve_button, reject_button, notice, viewer,
        save_edits, reason_code,
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


CARD_CONTENT = 6
"""How many components `card_updates` fills (CardView.content)."""


def card_updates(card: Card | None) -> list[Any]:
    """Values for CardView.content: the card shown, or the card hidden."""
    if card is None:
        return [gr.update(visible=False), "", None, "", "", None]
    return [
        gr.update(visible=True),
        card_summary_markdown(card),
        load_previews(card["previews"]),
        card_findings_markdown(card),
        card_writes_markdown(card),
        card.get("review_files"),
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
    edits: list[dict[str, Any]] | None = None,
    *,
    signing_window_s: float,
    reason_code: str | None = None,
) -> ApprovalDecision:
    """The card's form as the principal's decision; raises `agent.review.DecisionError` saying what is wrong.

    `edits` are the viewer's (JSON, as the browser session holds them): they go with "modify" only,
    so an approval or rejection never leaves corrections behind unsaid. `reason_code` (the rejection
    reason list) counts for a rejection only: an approval ignores it."""
    if principal is None:
        raise DecisionError(f"Nothing was decided: {NOT_SIGNED_IN}.")
    try:
        parsed = parse_edits(edits)
    except ValidationError as exc:
        raise DecisionError(f"The edits cannot be read ({exc.error_count()} problems); undo them and edit again. Nothing was decided.") from exc
    if action == "modify" and not parsed:
        raise DecisionError("No edits to save: paint or erase on a slice first. Nothing was decided.")
    if action != "modify" and parsed:
        raise DecisionError(
            f"{len(parsed)} edits are not saved: press “Save edits for approval”, or undo them to {action} the AI "
            "result as it is. Nothing was decided."
        )
    code = reason_code if action == "reject" else None
    return build_decision(action, principal, reason, signing_window_s=signing_window_s, edits=parsed, reason_code=code)
