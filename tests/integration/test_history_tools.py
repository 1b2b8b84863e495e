"""The planner's history tools and operator actions against the real Orthanc and FHIR server.

One world per module: a patient with two processed studies a year apart, a failed study and a
study whose approval waits. Every tool reads what was stored; none segments again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import BaseTool

from agent.chat import build_chat_graph
from agent.evaluation.world import StudySeed, World, harness_decision, harness_principal, seed_study
from agent.parts import fhir_client
from agent.planner.chat_model import OfflinePlanner
from agent.runtime import AgentRuntime
from agent.settings import Settings
from graphs.planner_tools.catalog import build_tools
from graphs.planner_tools.history_models import (
    AuditChain,
    JobCancelled,
    JobDetail,
    JobList,
    PriorComparison,
    StoredResults,
)
from graphs.planner_tools.models import JobStarted
from tests.integration.workflow_helpers import SeededStudy, task_of

pytestmark = pytest.mark.integration

SEEDS = {
    "prior": StudySeed(state="processed", patient="long", date="20230101"),
    "current": StudySeed(state="processed", patient="long", date="20240101"),
    "broken": StudySeed(state="failed"),
    "waiting": StudySeed(state="waiting"),
}


@pytest.fixture(scope="module")
def world(live_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentRuntime, World]]:
    root = tmp_path_factory.mktemp("history")
    with AgentRuntime(live_settings.model_copy(update={"run_dir": root / "run"})) as runtime:
        world = World()
        for number, (name, seed) in enumerate(SEEDS.items()):
            world.studies[name] = seed_study(
                live_settings, runtime, root / name, name, seed, 7100 + number, "HIST", harness_decision
            )
        yield runtime, world


def _tools(runtime: AgentRuntime) -> dict[str, BaseTool]:
    return {t.name: t for t in build_tools(runtime)}


def _call(runtime: AgentRuntime, name: str, args: dict[str, Any], operator: bool = False) -> Any:
    config = {"configurable": {"operator": harness_principal().model_dump(mode="json")}} if operator else None
    return json.loads(_tools(runtime)[name].invoke(args, config=config))


def test_stored_results_read_the_report_never_segment(world: tuple[AgentRuntime, World], live_settings: Settings) -> None:
    runtime, w = world
    current = w.studies["current"]
    results = StoredResults.model_validate(_call(runtime, "stored_results", {"imaging_study_id": current.imaging_study_id}))
    assert results.status == "available" and results.report_status == "final"
    assert [s.modality for s in results.result_series] == ["RTSTRUCT", "SEG", "SR"]
    assert sorted(v.snomed_code for v in results.volumes) == ["3341006", "44029006"]
    assert {a.approved_by for a in results.approvals} == {"eval-harness"}
    with fhir_client(live_settings) as fhir:
        stored = {v.observation_id: float(fhir.read("Observation", v.observation_id).valueQuantity.value) for v in results.volumes}
    assert stored == {v.observation_id: v.volume_ml for v in results.volumes}
    # Without an id: the most recently processed study, which is `current` (processed after `prior`).
    latest = StoredResults.model_validate(_call(runtime, "stored_results", {}))
    assert latest.imaging_study_id == current.imaging_study_id
    # Nothing was segmented for these reads: the only work folders are the jobs' own.
    assert not list((Path(runtime.settings.run_dir) / "work").rglob("*draft*"))


def test_jobs_failures_and_what_waits(world: tuple[AgentRuntime, World]) -> None:
    runtime, w = world
    failed = JobList.model_validate(_call(runtime, "list_jobs", {"status": "failed"}))
    assert [j.job_id for j in failed.jobs] == [w.studies["broken"].job_id]
    [outcome] = failed.jobs[0].outcomes
    assert outcome.outcome == "failed" and outcome.detail
    waiting = JobList.model_validate(_call(runtime, "list_jobs", {"status": "waiting-approval"}))
    assert [j.job_id for j in waiting.jobs] == [w.studies["waiting"].job_id]
    detail = JobDetail.model_validate(_call(runtime, "show_job", {"job_id": w.studies["waiting"].job_id}))
    assert detail.steps[:2] == ["start", "fetch"] and "build" in detail.steps
    assert detail.next_steps == ["approval"]
    [item] = detail.waiting
    assert item.imaging_study_id == w.studies["waiting"].imaging_study_id and item.claimed_by is None
    done = JobDetail.model_validate(_call(runtime, "show_job", {"job_id": w.studies["current"].job_id}))
    assert done.steps[-2:] == ["write_pacs", "write_fhir"] and done.next_steps == [] and done.failures == []


def test_audit_chain_and_priors(world: tuple[AgentRuntime, World]) -> None:
    runtime, w = world
    chain = AuditChain.model_validate(_call(runtime, "audit_study", {"imaging_study_id": w.studies["current"].imaging_study_id}))
    assert sorted(e.kind for e in chain.entries) == ["RTSTRUCT", "SEG", "SR"]
    assert all(e.approved_by == "eval-harness" and e.source_instances == 60 for e in chain.entries)
    priors = PriorComparison.model_validate(
        _call(runtime, "prior_studies", {"imaging_study_id": w.studies["current"].imaging_study_id})
    )
    [prior] = priors.priors
    assert prior.imaging_study_id == w.studies["prior"].imaging_study_id
    assert len(prior.change_since) == 2
    for change in prior.change_since:
        assert change.change_ml == pytest.approx(change.current_ml - change.prior_ml, abs=0.11)
    # The prior itself has no earlier study.
    assert PriorComparison.model_validate(
        _call(runtime, "prior_studies", {"imaging_study_id": w.studies["prior"].imaging_study_id})
    ).priors == []


def test_operator_actions_need_an_operator_and_end_at_approval(world: tuple[AgentRuntime, World], live_settings: Settings) -> None:
    runtime, w = world
    tools = _tools(runtime)
    with pytest.raises(PermissionError, match="needs a signed-in operator"):
        tools["cancel_job"].invoke({"job_id": w.studies["waiting"].job_id})
    with pytest.raises(ValueError, match="only a failed study is retried"):
        _call(runtime, "retry_study", {"imaging_study_id": w.studies["current"].imaging_study_id}, operator=True)
    retried = JobStarted.model_validate(
        _call(runtime, "retry_study", {"imaging_study_id": w.studies["broken"].imaging_study_id}, operator=True)
    )
    assert retried.done and [o["outcome"] for o in retried.outcomes] == ["failed"]
    rerun = JobStarted.model_validate(_call(
        runtime, "rerun_study", {"imaging_study_id": w.studies["prior"].imaging_study_id, "engine": "lung-threshold"},
        operator=True,
    ))
    assert not rerun.done and len(rerun.pending_approvals) == 1  # a re-run waits for approval like any job
    cancelled = JobCancelled.model_validate(_call(runtime, "cancel_job", {"job_id": rerun.job_thread_id}, operator=True))
    assert cancelled.status == "cancelled" and len(cancelled.withdrawn_approvals) == 1
    _call(runtime, "cancel_job", {"job_id": w.studies["waiting"].job_id}, operator=True)
    assert runtime.pending_approvals() == []
    waiting = w.studies["waiting"]
    task = task_of(live_settings, SeededStudy(**waiting.model_dump(exclude={"name", "job_id", "patient_id"})))
    assert task.status == "cancelled"
    with pytest.raises(ValueError, match="only a job that waits"):
        _call(runtime, "cancel_job", {"job_id": w.studies["current"].job_id}, operator=True)


def _tool_calls(messages: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(c["name"], c["args"]) for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]


def test_last_processed_volumes_are_read_not_segmented_in_the_chat(world: tuple[AgentRuntime, World]) -> None:
    runtime, w = world
    chat = build_chat_graph(runtime, OfflinePlanner())
    config = {"configurable": {"thread_id": "history-last-processed"}}
    state = chat.invoke({"messages": [HumanMessage("show me the lung volumes for the last processed study")]}, config)
    assert _tool_calls(state["messages"]) == [("stored_results", {})]
    answer = str(state["messages"][-1].content)
    assert f"ImagingStudy/{w.studies['current'].imaging_study_id}" in answer and " mL" in answer


def test_a_three_turn_follow_up_conversation(world: tuple[AgentRuntime, World]) -> None:
    runtime, w = world
    chat = build_chat_graph(runtime, OfflinePlanner())
    config = {"configurable": {"thread_id": "history-follow-ups"}}

    first = chat.invoke({"messages": [HumanMessage("list completed studies for patient HIST-LONG")]}, config)
    listed = first["referents"]["studies"]
    assert sorted(listed) == sorted([w.studies["prior"].imaging_study_id, w.studies["current"].imaging_study_id])
    turn_one = len(first["messages"])

    second = chat.invoke({"messages": [HumanMessage("show the lung volumes of the second one")]}, config)
    assert _tool_calls(second["messages"][turn_one:]) == [("stored_results", {"imaging_study_id": listed[1]})]
    assert second["referents"]["focus"] == listed[1] and second["referents"]["studies"] == listed
    turn_two = len(second["messages"])

    third = chat.invoke({"messages": [HumanMessage("the same for all of them")]}, config)
    assert _tool_calls(third["messages"][turn_two:]) == [("stored_results", {"imaging_study_id": i}) for i in listed]
    answer = str(third["messages"][-1].content)
    assert all(f"Stored results of ImagingStudy/{i}" in answer for i in listed)
    # The state keeps ids only: no patient name, no record text.
    assert set(third["referents"]) == {"studies", "jobs", "focus", "focus_job"}
    assert "Eval^Phantom" not in json.dumps(third["referents"])
