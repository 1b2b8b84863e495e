"""The chat planner over an AgentRuntime, with the planner model chosen by the settings."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel

from agent.llm import build_chat_model
from agent.runtime import AgentRuntime
from graphs.chat import compile_chat_graph


def build_chat_graph(runtime: AgentRuntime, model: BaseChatModel | None = None, *, checkpointer: Any = None) -> Any:
    """The compiled chat graph; `model` defaults to the planner the settings choose (see agent/llm.py)."""
    return compile_chat_graph(
        runtime,
        model or build_chat_model(runtime.settings),
        checkpointer=checkpointer,
        free_text=runtime.settings.llm_free_text,
    )
