"""The chat tab: a goal in, the planner's steps streamed out, and the approval card it stops at."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
from langchain_core.messages import HumanMessage

from agent.review import DecisionError
from agent.ui.cards import CARD_CONTENT, CardView, Identify, card_updates, card_view, form_decision, nobody
from agent.ui.markdown import readable_error
from agent.ui.session import LockedGraphs
from agent.ui.transcript import Transcript
from agent.untrusted import markdown_literal
from graphs.chat import answer
from tools.identity.principal import Principal

EXAMPLE_GOAL = "analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS"


def _keep_card() -> list[Any]:
    """Leave the card's components (CardView.content) as they are."""
    return [gr.update() for _ in range(CARD_CONTENT)]


class ChatTab:
    """The conversation's components and handlers; one LangGraph thread per browser session."""

    def __init__(self, graphs: LockedGraphs, signing_window_s: float, identify: Identify = nobody) -> None:
        self.graphs = graphs
        self.signing_window_s = signing_window_s
        self.identify = identify
        self.thread_id = gr.State(None)
        self.card = gr.State(None)
        self.chatbot = gr.Chatbot(label="Conversation", height=520, elem_id="chatbot")
        with gr.Row():
            self.goal = gr.Textbox(show_label=False, placeholder=f"e.g. {EXAMPLE_GOAL}", scale=6, elem_id="goal")
            self.send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        self.view: CardView = card_view("chat")
        self._wire()

    def _wire(self) -> None:
        # Every handler yields values for these, in this order.
        outputs = [self.chatbot, self.goal, self.thread_id, self.card, *self.view.content, self.view.notice]
        self.send.click(self.on_send, [self.goal, self.chatbot, self.thread_id], outputs)
        self.goal.submit(self.on_send, [self.goal, self.chatbot, self.thread_id], outputs)
        decision_inputs = [
            self.chatbot, self.thread_id, self.card, self.view.reason, self.view.reason_code, self.view.viewer.edits
        ]
        self.view.approve.click(self.on_decision("approve"), decision_inputs, outputs)
        self.view.reject.click(self.on_decision("reject"), decision_inputs, outputs)
        self.view.save_edits.click(self.on_decision("modify"), decision_inputs, outputs)

    def stream_into(
        self, transcript: Transcript, value: Any, thread: str, operator: Principal | None = None
    ) -> Iterator[list[Any]]:
        """Run the chat graph on `value`, showing each step; then the card it stopped at, if any."""
        card: dict[str, Any] | None = None
        for event in self.graphs.stream_chat(value, thread, operator):
            if event.kind == "item":
                transcript.apply(*event.payload)
            elif event.kind == "card":
                card = event.payload
            elif event.kind == "error":
                transcript.say("assistant", f"⚠ {event.payload}")
            yield [transcript.messages, gr.update(), thread, gr.update(), *_keep_card(), gr.update()]
        transcript.finish()
        if card is not None:
            study = card["imaging_study_id"]
            transcript.say(
                "assistant", f"Results for ImagingStudy/{markdown_literal(study)} wait for your approval: see below."
            )
        yield [transcript.messages, gr.update(), thread, card, *card_updates(card), ""]

    def on_send(
        self, message: str, history: list[Any], thread: str | None, request: gr.Request
    ) -> Iterator[list[Any]]:
        transcript = Transcript(history)
        text = (message or "").strip()
        if not text:
            yield [history, gr.update(), thread, gr.update(), *_keep_card(), f"Type a goal first, e.g. “{EXAMPLE_GOAL}”."]
            return
        thread = thread or f"ui-{uuid.uuid4().hex[:12]}"
        transcript.say("user", text)
        yield [transcript.messages, "", thread, None, *card_updates(None), ""]
        # The signed-in person may use the operator tools (retry, re-run, cancel); the model never names them.
        operator = self.identify(request)
        yield from self.stream_into(transcript, {"messages": [HumanMessage(text)]}, thread, operator)

    def on_decision(self, action: str) -> Callable[..., Iterator[list[Any]]]:
        """The Approve or Reject handler: checks the form and the card, then resumes the conversation."""

        def handler(
            history: list[Any],
            thread: str | None,
            card: dict[str, Any] | None,
            reason: str,
            reason_code: str | None,
            edits: list[dict[str, Any]],
            request: gr.Request,
        ) -> Iterator[list[Any]]:
            unchanged = [history, gr.update(), thread, gr.update(), *_keep_card()]
            if not thread or not card:
                yield [*unchanged, "This conversation has no approval waiting."]
                return
            try:
                decision = form_decision(
                    action, self.identify(request), reason, edits, signing_window_s=self.signing_window_s,
                    reason_code=reason_code,
                )
            except DecisionError as exc:
                yield [*unchanged, f"⚠ {exc}"]
                return
            try:
                current = self.graphs.chat_card(thread)
            except Exception as exc:
                yield [*unchanged, f"⚠ {readable_error(exc)}"]
                return
            if current is None or current["approval_id"] != card["approval_id"]:
                # The card on screen is stale: show what the conversation waits for now, decide nothing.
                yield [history, gr.update(), thread, current, *card_updates(current),
                       "This card was answered already; the conversation's current approval is shown."]
                return
            transcript = Transcript(history)
            verb = {
                "approve": "Approved",
                "modify": f"Corrected ({len(decision.edits)} edits) for approval",
            }.get(action, f"Rejected ({markdown_literal(decision.reason or decision.reason_code)})")
            transcript.say(
                "user",
                f"{verb}: ImagingStudy/{markdown_literal(card['imaging_study_id'])}, "
                f"reviewer {markdown_literal(decision.reviewer_name)}",
            )
            command = answer(card["approval_id"], decision)
            yield [transcript.messages, gr.update(), thread, None, *card_updates(None), ""]
            yield from self.stream_into(transcript, command, thread)

        return handler
