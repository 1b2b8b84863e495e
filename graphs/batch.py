"""The batch: a FHIR work list fanned out to one study pipeline per study.

    select (FHIR search) -> Send("study", ...) per study, at most `max_concurrency` at once
                         -> summarize

Each study runs the study graph as a subgraph (its own checkpoints, its own approval
interrupt); a failing study becomes a `failed` outcome and the others go on. Approvals from
several studies are pending at the same time and can be answered one by one or together.
"""

from __future__ import annotations

import logging
import operator
import threading
from typing import Annotated, Any, TypedDict

from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.types import Checkpointer, Send

from agent.parts import fhir_client
from agent.settings import Settings
from graphs.study import StudyState, build_study_graph
from tools.fhir.task import task_token
from tools.fhir.worklist import DEFAULT_WORKLIST_QUERY, find_worklist

log = logging.getLogger(__name__)


class StudyOutcome(TypedDict):
    imaging_study_id: str
    study_instance_uid: str | None
    outcome: str
    detail: str
    seconds: float


class BatchState(TypedDict, total=False):
    query: dict[str, str]
    engine: str
    targets: list[str]
    studies: list[dict[str, Any]]
    outcomes: Annotated[list[StudyOutcome], operator.add]
    summary: dict[str, int]


def outcome_of(state: StudyState) -> StudyOutcome:
    """One study's line in a batch summary, from its final state."""
    outcome = state.get("outcome", "failed")
    if outcome == "completed":
        detail = f"stored {len(state.get('stored', []))} new DICOM object(s); report {state.get('report_reference', '-')}"
    elif outcome == "rejected":
        detail = f"rejected: {state.get('decision', {}).get('reason', '')}"
    else:
        detail = f"{state.get('failed_stage', '?')}: {state.get('error', 'unknown error')}"
    return StudyOutcome(
        imaging_study_id=state["imaging_study_id"],
        study_instance_uid=state.get("study", {}).get("study_instance_uid"),
        outcome=outcome,
        detail=detail,
        seconds=round(sum(state.get("seconds", {}).values()), 2),
    )


def build_batch_graph(settings: Settings, checkpointer: Checkpointer = None) -> Any:
    """Compile the batch graph; invoke with {"query": {...}} (default: registered CT studies)."""
    study_graph = build_study_graph(settings)

    def select(state: BatchState) -> dict[str, Any]:
        """The work list, less the studies whose result a reviewer already rejected.

        A rejected study stays `registered`; rerunning the same engine would show the reviewer the
        same result again, so the batch leaves it and says how to run it on purpose.
        """
        query = state.get("query") or DEFAULT_WORKLIST_QUERY
        engine = state.get("engine") or settings.default_engine
        studies: list[dict[str, Any]] = []
        skipped: list[StudyOutcome] = []
        with fhir_client(settings) as fhir:
            for item in find_worklist(fhir, query):
                tasks = (
                    fhir.search("Task", {"identifier": task_token(item.study_instance_uid, engine)})
                    if item.study_instance_uid
                    else []
                )
                if tasks and tasks[0].status == "rejected":
                    reason = tasks[0].statusReason.text if tasks[0].statusReason else "no reason recorded"
                    skipped.append(
                        StudyOutcome(
                            imaging_study_id=item.imaging_study_id,
                            study_instance_uid=item.study_instance_uid,
                            outcome="skipped",
                            detail=(
                                f"its {engine} result was rejected earlier ({reason}); run "
                                f"`imaging-agent process --study {item.imaging_study_id}` to process it again"
                            ),
                            seconds=0.0,
                        )
                    )
                else:
                    studies.append(item.model_dump())
        log.info("batch work list: %d studies for %s, %d skipped as rejected", len(studies), query, len(skipped))
        return {"query": query, "studies": studies, "outcomes": skipped}

    def fan_out(state: BatchState) -> list[Send] | str:
        studies = state.get("studies", [])
        if not studies:
            return "summarize"
        return [
            Send(
                "study",
                {
                    "imaging_study_id": item["imaging_study_id"],
                    "engine": state.get("engine") or settings.default_engine,
                    "targets": state.get("targets") or ["lungs"],
                },
            )
            for item in studies
        ]

    # LangGraph's max_concurrency sizes a thread pool that its own stream waiter also uses, so it
    # cannot be the limit: with 1 the batch would wait forever. The limit is this semaphore.
    running = threading.BoundedSemaphore(settings.batch_concurrency)

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
