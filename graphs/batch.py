"""The batch: a FHIR work list fanned out to one study pipeline per study.

    select (FHIR search) -> Send("study", ...) per study, at most `concurrency` at once
                         -> summarize

Each study runs the study graph as a subgraph (its own checkpoints, its own approval
interrupt); a failing study becomes a `failed` outcome and the others go on. Approvals from
several studies are pending at the same time and can be answered one by one or together.
"""

from __future__ import annotations

import logging
import operator
import threading
from collections.abc import Mapping
from typing import Annotated, Any, Protocol, TypedDict

from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.types import Checkpointer, Send

from graphs.study import DEFAULT_TARGETS, StudyState, StudySteps, build_study_graph, outcome_of
from tools.fhir.worklist import DEFAULT_WORKLIST_QUERY, WorklistItem
from tools.workflow.records import StudyOutcome

log = logging.getLogger(__name__)


class BatchSteps(StudySteps, Protocol):
    """The study steps plus the work-list selection."""

    def select(self, query: Mapping[str, str], engine: str) -> tuple[list[WorklistItem], list[StudyOutcome]]: ...


class BatchState(TypedDict, total=False):
    query: dict[str, str]
    engine: str
    targets: list[str]
    studies: list[WorklistItem]
    outcomes: Annotated[list[StudyOutcome], operator.add]
    summary: dict[str, int]


def build_batch_graph(steps: BatchSteps, concurrency: int, checkpointer: Checkpointer = None) -> Any:
    """Compile the batch graph; invoke with {"query": {...}} (default: registered CT studies)."""
    study_graph = build_study_graph(steps)

    def select(state: BatchState) -> dict[str, Any]:
        query = state.get("query") or DEFAULT_WORKLIST_QUERY
        studies, skipped = steps.select(query, state.get("engine") or steps.default_engine)
        return {"query": dict(query), "studies": studies, "outcomes": skipped}

    def fan_out(state: BatchState) -> list[Send] | str:
        studies = state.get("studies", [])
        if not studies:
            return "summarize"
        return [
            Send(
                "study",
                {
                    "imaging_study_id": item.imaging_study_id,
                    "engine": state.get("engine") or steps.default_engine,
                    "targets": state.get("targets") or DEFAULT_TARGETS,
                },
            )
            for item in studies
        ]

    # LangGraph's max_concurrency sizes a thread pool that its own stream waiter also uses, so it
    # cannot be the limit: with 1 the batch would wait forever. The limit is this semaphore.
    running = threading.BoundedSemaphore(concurrency)

    def study(state: StudyState) -> dict[str, Any]:
        try:
            with running:
                final = study_graph.invoke(state, durability="sync")
        except GraphBubbleUp:
            raise
        except Exception as exc:  # a bug in one study must not sink the batch
            log.exception("study %s crashed", state["imaging_study_id"])
            final = {**state, "outcome": "failed", "failed_stage": "pipeline", "error": str(exc)}
        return {"outcomes": [outcome_of(final)]}

    def summarize(state: BatchState) -> dict[str, Any]:
        counts: dict[str, int] = {"studies": len(state.get("outcomes", []))}
        for item in state.get("outcomes", []):
            counts[item["outcome"]] = counts.get(item["outcome"], 0) + 1
        return {"summary": counts}

    graph = StateGraph(BatchState)
    graph.add_node("select", select)
    graph.add_node("study", study)
    graph.add_node("summarize", summarize)
    graph.add_edge(START, "select")
    graph.add_conditional_edges("select", fan_out, ["study", "summarize"])
    graph.add_edge("study", "summarize")
    graph.add_edge("summarize", END)
    return graph.compile(checkpointer=checkpointer, name="batch")
