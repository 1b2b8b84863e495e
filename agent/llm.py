"""The planner's chat model, chosen from settings.

- OpenAI, or any OpenAI-compatible server (vLLM, Ollama, LM Studio) via `openai_base_url`;
- Azure OpenAI via its endpoint and deployment;
- the offline intent planner when nothing is configured: no key, no network.
"""

from __future__ import annotations

from typing import Literal

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from agent.settings import Settings

PlannerKind = Literal["offline", "openai", "azure"]


class PlannerInfo(BaseModel):
    """Which planner runs, in words for the UI and the CLI."""

    kind: PlannerKind
    description: str


def planner_kind(settings: Settings) -> PlannerKind:
    if settings.llm_provider != "auto":
        return settings.llm_provider
    if settings.azure_openai_endpoint:
        return "azure"
    if settings.openai_api_key or settings.openai_base_url:
        return "openai"
    return "offline"


def planner_info(settings: Settings) -> PlannerInfo:
    kind = planner_kind(settings)
    if kind == "offline":
        text = "offline intent planner (no LLM; understands the documented goal grammar — type 'help')"
    elif kind == "azure":
        text = f"Azure OpenAI deployment {settings.azure_openai_deployment} at {settings.azure_openai_endpoint}"
    else:
        where = settings.openai_base_url or "api.openai.com"
        text = f"OpenAI-compatible model {settings.llm_model} at {where}"
    return PlannerInfo(kind=kind, description=text)


def build_chat_model(settings: Settings) -> BaseChatModel:
    kind = planner_kind(settings)
    if kind == "offline":
        from agent.planner.chat_model import OfflinePlanner

        return OfflinePlanner()
    if kind == "azure":
        from langchain_openai import AzureChatOpenAI

        if not settings.azure_openai_deployment:
            raise ValueError("Azure OpenAI needs IMAGING_AGENT_AZURE_OPENAI_DEPLOYMENT (see .env.example)")
        return AzureChatOpenAI(
            azure_endpoint=settings.azure_openai_endpoint,
            azure_deployment=settings.azure_openai_deployment,
            api_version=settings.azure_openai_api_version,
            api_key=settings.azure_openai_api_key,
            temperature=settings.llm_temperature,
            timeout=settings.http_timeout_s,
            max_retries=settings.http_retry_attempts - 1,
        )
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=settings.llm_model,
        api_key=settings.openai_api_key or "not-needed",  # local OpenAI-compatible servers take any key
        base_url=settings.openai_base_url,
        temperature=settings.llm_temperature,
        timeout=settings.http_timeout_s,
        max_retries=settings.http_retry_attempts - 1,
    )
