"""The chat history as Gradio message dicts: tool steps and progress lines are updated in place."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage

from agent.ui.markdown import STAGE_LABELS, progress_log
from agent.untrusted import markdown_code, markdown_literal, markdown_paragraphs

_TOOL_ERROR = re.compile(r"^Error: \w+\((['\"])(.*)\1\)\s*(Please fix your mistakes\.)?$", re.DOTALL)
"""ToolNode's wrapping of a tool's exception: "Error: Type('message')\\n Please fix your mistakes."."""


def tool_step_summary(content: str, failed: bool = False) -> str:
    """A short, human-readable result of a tool call (the model gets the full JSON).

    Tool results carry record text (descriptions, server messages): shown literally, never as Markdown."""
    if failed:
        wrapped = _TOOL_ERROR.match(content.strip())
        return f"✗ {markdown_literal(wrapped.group(2) if wrapped else content[:500])}"
    try:
        data = json.loads(content)
    except ValueError:
        return markdown_literal(content[:300])
    if isinstance(data, dict) and "job_thread_id" in data:
        waiting = len(data.get("pending_approvals", []))
        finished = len(data.get("outcomes", []))
        return (
            f"Started {markdown_literal(data.get('kind', ''))} job {markdown_code(data['job_thread_id'])}: "
            f"{waiting} approval(s) waiting, {finished} study outcome(s) so far."
        )
    if isinstance(data, dict) and "count" in data:
        return f"{markdown_literal(data['count'])} found."
    text = json.dumps(data, ensure_ascii=False)
    return markdown_literal(text if len(text) <= 300 else text[:300] + "…")


class Transcript:
    """The chat history as Gradio message dicts, with tool steps and progress lines updated in place."""

    def __init__(self, history: Sequence[Any] | None) -> None:
        self.messages: list[dict[str, Any]] = [dict(m) for m in history or []]
        self._steps: dict[str, int] = {}
        self._progress: dict[str, int] = {}

    def say(self, role: str, content: str, metadata: dict[str, Any] | None = None) -> int:
        message: dict[str, Any] = {"role": role, "content": content}
        if metadata:
            message["metadata"] = metadata
        self.messages.append(message)
        return len(self.messages) - 1

    def apply(self, mode: str, chunk: Any) -> None:
        if mode == "custom":
            self._on_progress(chunk)
            return
        for node, update in chunk.items():
            if node.startswith("__") or not isinstance(update, dict):
                continue
            for message in update.get("messages", []):
                self._on_message(message)

    def _on_progress(self, event: Mapping[str, Any]) -> None:
        study = str(event.get("imaging_study_id", "?"))
        stage = str(event.get("stage", ""))
        log_text = f"{STAGE_LABELS.get(stage, stage)} {float(event.get('percent', 0)):.0f}%"
        metadata = {"title": f"Progress: ImagingStudy/{study}", "status": "pending", "log": log_text}
        if study not in self._progress:
            self._progress[study] = self.say("assistant", progress_log(event), metadata)
        index = self._progress[study]
        if event.get("stage") in ("approval", "failed"):
            metadata["status"] = "done"
        self.messages[index] = {"role": "assistant", "content": progress_log(event), "metadata": metadata}

    def _on_message(self, message: Any) -> None:
        if isinstance(message, AIMessage):
            if str(message.content).strip():
                self.say("assistant", markdown_paragraphs(str(message.content)))
            for call in message.tool_calls:
                args = json.dumps(call["args"], ensure_ascii=False) if call["args"] else "(defaults)"
                self._steps[str(call["id"])] = self.say(
                    "assistant",
                    f"Arguments: {markdown_code(args)}",
                    {"title": f"Tool: {call['name']}", "id": str(call["id"]), "status": "pending"},
                )
        elif isinstance(message, ToolMessage):
            index = self._steps.get(str(message.tool_call_id))
            summary = tool_step_summary(str(message.content), message.status == "error")
            if index is None:
                self.say("assistant", summary, {"title": f"Tool: {message.name}", "status": "done"})
                return
            step = self.messages[index]
            step["content"] = f"{step['content']}\n\n{summary}"
            step["metadata"] = {**step["metadata"], "status": "done"}

    def finish(self) -> None:
        """No spinner stays on once the run is over."""
        for index in [*self._steps.values(), *self._progress.values()]:
            metadata = self.messages[index].get("metadata") or {}
            self.messages[index]["metadata"] = {**metadata, "status": "done"}
