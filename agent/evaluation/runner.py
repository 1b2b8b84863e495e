"""Running goals: each in a conversation of its own, against a world of seeded studies, then graded.

Before a goal, the runner takes the previous goals' fresh studies off the work list (status
cancelled) and cancels their unfinished jobs, so a goal sees the shared world and its own studies
only; then it seeds the goal's studies, notes every study's state, runs the goal's turns through
the chat graph (answering each approval card as the goal says, as the harness radiologist), notes
the states again and grades (agent/evaluation/grading.py).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.errors import GraphRecursionError

from agent.evaluation.goals import Goal, GoalFile
from agent.evaluation.grading import Observed, StudyState, ToolCall, Verdict, grade
from agent.evaluation.world import World, WorldStudy, harness_decision, harness_principal, seed_study
from agent.planner.chat_model import OfflinePlanner
from agent.runtime import AgentRuntime
from agent.settings import Settings
from graphs.chat import answer, compile_chat_graph
from graphs.runtime import WorkflowRuntime
from tools.results.assessment import ASSESSMENT_SERIES_NUMBER

log = logging.getLogger(__name__)

MAX_APPROVALS_PER_TURN = 20


def private_settings(base: Settings, run_dir: Path) -> Settings:
    """Settings for a private Orthanc, FHIR server and SQLite state under `run_dir`; the planner's from `base`."""
    from agent.services.process import free_port

    http, fhir = free_port(), free_port()
    llm = base.model_dump(include={
        "llm_provider", "llm_model", "llm_temperature", "openai_api_key", "openai_base_url", "azure_openai_endpoint",
        "azure_openai_deployment", "azure_openai_api_version", "azure_openai_api_key", "llm_free_text", "fhir_venv",
        "http_timeout_s", "http_retry_attempts",
    })
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        run_dir=run_dir, orthanc_http_port=http, orthanc_dicom_port=free_port(), fhir_port=fhir,
        orthanc_password=secrets.token_urlsafe(16), dicomweb_url=f"http://127.0.0.1:{http}/dicom-web",
        fhir_url=f"http://127.0.0.1:{fhir}/fhir", dicomweb_auth="none", fhir_auth="none", database_url=None,
        broker_url=None, engine_queue="inline", pacs_store="dicomweb", work_dir=None, **llm,
    )


@contextmanager
def private_services(settings: Settings) -> Iterator[None]:
    """The private servers of `settings`, stopped (by their PID files) when the run ends."""
    from agent import services

    try:
        services.up(settings)
        yield
    finally:
        services.down(settings)


def _resolver(world: World) -> Callable[[Any], Any]:
    def ref(value: Any) -> Any:
        if isinstance(value, str):
            return world.ref(value)
        if isinstance(value, list):
            return [ref(v) for v in value]
        return value

    return ref


class GoalRunner:
    """Runs goals over one runtime (its services hold the world) with one chat model."""

    def __init__(self, settings: Settings, runtime: WorkflowRuntime, model: BaseChatModel, seeds_dir: Path) -> None:
        self.settings = settings
        self.runtime = runtime
        self.use_model(model)
        self.seeds_dir = seeds_dir
        self.world = World()
        self._fresh: list[WorldStudy] = []
        self._number = 0
        self._goals = 0

    def use_model(self, model: BaseChatModel) -> None:
        """Plan the next goals with `model` (the scripted models of the tests change it per goal)."""
        self.offline = isinstance(model, OfflinePlanner)
        self.chat = compile_chat_graph(self.runtime, model, free_text=self.settings.llm_free_text)

    def _seed(self, name: str, seed: Any, prefix: str) -> WorldStudy:
        self._number += 1
        return seed_study(self.settings, self.runtime, self.seeds_dir / f"{prefix}-{name}", name, seed,
                          9000 + self._number, prefix, harness_decision)

    def seed_world(self, goal_file: GoalFile) -> None:
        for name, seed in goal_file.world.items():
            self.world.studies[name] = self._seed(name, seed, "EVALW")

    # -- between goals ----------------------------------------------------------------------
    def _reset(self) -> None:
        fhir = self.runtime.workflow.services.fhir
        for study in self._fresh:
            record = fhir.read("ImagingStudy", study.imaging_study_id)
            if record.status == "registered":
                record.status = "cancelled"
                fhir.update(record, if_match=record.meta.versionId if record.meta else None)
            self.world.studies.pop(study.name, None)
        self._fresh = []
        for job in self.runtime.jobs(unfinished_only=True):
            self.runtime.cancel(job.thread_id, "evaluation: the goal that started it is over")

    def _states(self) -> dict[str, StudyState]:
        fhir = self.runtime.workflow.services.fhir
        pacs = self.runtime.workflow.services.pacs
        pending: dict[str, int] = {}
        for p in self.runtime.pending_approvals():
            pending[p.request.imaging_study_id] = pending.get(p.request.imaging_study_id, 0) + 1
        states = {}
        for name, study in self.world.studies.items():
            series = sorted(
                s.modality or "?" for s in pacs.search_series(study.study_instance_uid)
                if s.modality != "CT" and s.series_number != ASSESSMENT_SERIES_NUMBER
            )
            status = str(fhir.read("ImagingStudy", study.imaging_study_id).status)
            reference = f"ImagingStudy/{study.imaging_study_id}"
            reports = [
                r for r in fhir.search("DiagnosticReport", {"subject": study.patient_reference})
                if any(ref.reference == reference for ref in r.imagingStudy or [])
            ]
            tasks = sorted(fhir.search("Task", {"focus": reference}), key=lambda t: str(t.meta.lastUpdated if t.meta else ""))
            states[name] = StudyState(
                status=status, series=series, pending=pending.get(study.imaging_study_id, 0), reports=len(reports),
                task=str(tasks[-1].status) if tasks else None,
            )
        return states

    # -- one goal -----------------------------------------------------------------------------
    def _converse(self, goal: Goal, thread: str) -> list[Any]:
        configurable: dict[str, Any] = {"thread_id": thread}
        if goal.operator:
            configurable["operator"] = harness_principal(("operator",)).model_dump(mode="json")
        config = {"configurable": configurable, "recursion_limit": 60}
        for turn in goal.turns:
            self.chat.invoke({"messages": [HumanMessage(self.world.text(turn))]}, config)
            for _ in range(MAX_APPROVALS_PER_TURN):
                interrupts = self.chat.get_state(config).interrupts
                if not interrupts or goal.decide == "leave":
                    break
                card = interrupts[0].value
                self.chat.invoke(answer(card["approval_id"], harness_decision(goal.decide)), config)
        return list(self.chat.get_state(config).values.get("messages", []))

    def run(self, goal: Goal, run_id: str) -> Verdict:
        self._reset()
        self._goals += 1
        for name, seed in goal.studies.items():
            study = self._seed(name, seed, f"EVALG{self._goals}")
            self.world.studies[name] = study
            self._fresh.append(study)
        before = self._states()
        error = None
        messages: list[Any] = []
        try:
            messages = self._converse(goal, f"eval-{run_id}-{goal.id}")
        except GraphRecursionError:
            error = "the planner did not finish within 60 steps"
        except Exception as exc:  # a model or server error fails this goal, not the run
            log.warning("goal %s raised %s", goal.id, type(exc).__name__)
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
        calls = [ToolCall(name=c["name"], args=c["args"]) for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
        tokens = sum((m.usage_metadata or {}).get("total_tokens", 0) for m in messages if isinstance(m, AIMessage))
        observed = Observed(before=before, after=self._states(), calls=calls, tokens=tokens, error=error)
        return grade(goal, observed, _resolver(self.world), as_refusal=self.offline and not goal.in_grammar)


def run_goals(
    settings: Settings, model: BaseChatModel, goal_file: GoalFile, goals: Sequence[Goal], work: Path, run_id: str,
    on_verdict: Callable[[Verdict], None] | None = None,
) -> list[Verdict]:
    """Seed the world, then run and grade `goals` in order (against the services `settings` name)."""
    with AgentRuntime(settings) as runtime:
        runner = GoalRunner(settings, runtime, model, work / "seeds")
        runner.seed_world(goal_file)
        verdicts = []
        for goal in goals:
            verdict = runner.run(goal, run_id)
            verdicts.append(verdict)
            if on_verdict is not None:
                on_verdict(verdict)
        return verdicts
