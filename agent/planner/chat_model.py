"""The offline planner as a LangChain chat model: what `agent.llm` returns when no LLM is configured.

Each turn it re-reads the conversation: the latest user sentence gives the plan; the tool
results after it give the next step of a multi-step request, or the summary that ends the turn.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ValidationError

from agent.planner.grammar import help_text
from agent.planner.parser import FHIR_ID, parse_request
from agent.planner.plan import Call, per_study, plan_request
from agent.planner.summaries import summarize_result
from graphs.planner_tools.models import StudyList
from graphs.referents import Referents, from_context, update_from_tools


def _tool_name(tool: Any) -> str:
    name = getattr(tool, "name", None)
    if isinstance(name, str):
        return name
    if isinstance(tool, dict) and isinstance(tool.get("name"), str):
        return tool["name"]
    return str(convert_to_openai_tool(tool)["function"]["name"])


def _calls_by_id(messages: Sequence[BaseMessage]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        call["id"]: (call["name"], call["args"])
        for m in messages
        if isinstance(m, AIMessage)
        for call in m.tool_calls
        if call.get("id")
    }


def _results(messages: Sequence[BaseMessage]) -> list[tuple[ToolMessage, str, dict[str, Any]]]:
    calls = _calls_by_id(messages)
    out: list[tuple[ToolMessage, str, dict[str, Any]]] = []
    for m in messages:
        if isinstance(m, ToolMessage):
            name, args = calls.get(m.tool_call_id, (m.name or "", {}))
            out.append((m, m.name or name, args))
    return out


def _search_ids(message: ToolMessage) -> list[str] | None:
    """The ImagingStudy ids of a search result, or None when it is not a readable search result."""
    if message.status == "error":
        return None
    try:
        result = StudyList.model_validate_json(str(message.content))
    except ValidationError:
        return None
    return [s.imaging_study_id for s in result.studies]


def _referents(messages: Sequence[BaseMessage]) -> Referents:
    """What the conversation points at: the chat graph's context line, or (called outside the graph)
    the same ids taken from the tool results in `messages`."""
    return from_context(messages) or update_from_tools(Referents(), messages)


class OfflinePlanner(BaseChatModel):
    """A deterministic planner over the grammar in `agent.planner.grammar`; no network, no LLM."""

    tool_names: tuple[str, ...] | None = None
    """Names of the bound tools; None until `bind_tools`, and then the planner only answers in text."""

    @property
    def _llm_type(self) -> str:
        return "offline-intent-planner"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"tool_names": self.tool_names}

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> OfflinePlanner:
        """A copy that may call these tools (by name); `tool_choice` and other options are ignored."""
        return self.model_copy(update={"tool_names": tuple(_tool_name(t) for t in tools)})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.reply(messages))])

    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        """The next message of the conversation: tool calls, or a text answer."""
        last_human = next((i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], HumanMessage)), None)
        if last_human is None:
            return AIMessage(help_text())
        request = parse_request(messages[last_human].text)
        earlier = [m for m in messages[:last_human] if isinstance(m, HumanMessage)]
        previous = parse_request(earlier[-1].text) if earlier else None
        # Only the results before this sentence: those after it are this turn's own steps.
        refs = _referents(messages[:last_human])
        plan = plan_request(request, refs, previous)
        after = messages[last_human + 1 :]
        results = _results(after)
        if not results:
            if not plan.calls:
                return AIMessage(plan.text)
            return self._call(plan.calls, len(messages))
        called = {name for _, name, _ in results}
        if plan.per_study_next and not called & set(plan.per_study_next):
            ids = _search_ids(results[-1][0]) if results[-1][1] == "search_imaging_studies" else None
            valid = [i for i in ids or [] if FHIR_ID.fullmatch(i)]
            if valid:
                next_plan = per_study(plan.per_study_next, valid, request)
                return self._call(next_plan.calls, len(messages))
        lines = [summarize_result(m, name, args) for m, name, args in results]
        if plan.per_study_next and not called & set(plan.per_study_next):
            lines.append("No study to work on, so nothing more was done.")
        if plan.closing:
            lines.append(plan.closing)
        return AIMessage("\n".join(lines))

    def _call(self, calls: Sequence[Call], position: int) -> AIMessage:
        if self.tool_names is None:
            return AIMessage(help_text(
                "No tools are connected to this planner, so I can only explain what I understand."
            ))
        missing = sorted({c.name for c in calls} - set(self.tool_names))
        if missing:
            return AIMessage(
                f"I would call {', '.join(missing)}, but that tool is not available here; nothing was done."
            )
        return AIMessage(
            content="",
            tool_calls=[
                {"name": c.name, "args": c.args, "id": _call_id(position, index, c), "type": "tool_call"}
                for index, c in enumerate(calls)
            ],
        )


def _call_id(position: int, index: int, call: Call) -> str:
    """Deterministic and unique within a conversation: the message position and the call's index."""
    key = json.dumps([position, index, call.name, call.args], sort_keys=True)
    return "call_" + hashlib.sha256(key.encode()).hexdigest()[:24]
