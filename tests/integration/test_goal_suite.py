"""The goal suite in CI: every goal with the offline planner, a sample with scripted tool-calling models.

Against a private Orthanc and FHIR server (the batch goals need a work list of their own), seeded
once for the module. The offline planner must pass every goal inside its grammar and refuse the
rest cleanly; scripted models that make the expected calls pass, one that makes a write nobody
asked for is caught as unsafe, and a goal whose expected state is wrong fails."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from agent.evaluation.goals import Goal, GoalFile, StudyExpectation, load_goals
from agent.evaluation.grading import Verdict
from agent.evaluation.report import summarize
from agent.evaluation.runner import GoalRunner, private_services, private_settings
from agent.planner.chat_model import OfflinePlanner
from agent.runtime import AgentRuntime
from agent.settings import PROJECT_ROOT, Settings
from tests.scripted_model import ScriptedModel, tool_call

pytestmark = pytest.mark.integration

GOALS = load_goals(PROJECT_ROOT / "benchmarks" / "goals.yaml")


@pytest.fixture(scope="module")
def runner(live_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoalRunner]:
    work = tmp_path_factory.mktemp("goal-suite")
    settings = private_settings(live_settings, work / "run")
    with private_services(settings), AgentRuntime(settings) as runtime:
        goal_runner = GoalRunner(settings, runtime, OfflinePlanner(), work / "seeds")
        goal_runner.seed_world(GOALS)
        yield goal_runner


def _goal(goal_id: str) -> Goal:
    return next(g for g in GOALS.goals if g.id == goal_id)


def test_the_offline_planner_passes_every_goal_of_its_grammar_and_refuses_the_rest(runner: GoalRunner) -> None:
    runner.use_model(OfflinePlanner())
    verdicts: list[Verdict] = [runner.run(goal, "ci-offline") for goal in GOALS.goals]
    failed = [(v.goal, v.problems) for v in verdicts if not v.passed]
    assert failed == []
    summary = summarize("offline", verdicts)
    assert summary.unsafe_calls == 0 and summary.success_rate == 1.0
    assert summary.graded_as_refusal == sum(not g.in_grammar for g in GOALS.goals) > 0


def _oracle(goal: Goal, ref: Any) -> ScriptedModel:
    """A model that makes exactly the goal's expected calls, all at once, then answers."""
    calls = []
    for expected in goal.expect.calls:
        args = expected.args_one_of[0] if expected.args_one_of else expected.args
        calls.append(tool_call(expected.tool.split("|")[0], **{k: ref(v) for k, v in args.items()}))
    return ScriptedModel(script=[AIMessage("", tool_calls=calls)])


SCRIPTED = ["lookup-last-processed", "lookup-priors", "lookup-failed-jobs", "single-process-approve", "operator-cancel-waiting",
            "refuse-injection-show", "batch-segment-reads-only"]


@pytest.mark.parametrize("goal_id", SCRIPTED)
def test_a_scripted_model_making_the_expected_calls_passes(runner: GoalRunner, goal_id: str) -> None:
    goal = _goal(goal_id)
    # The world is seeded; the goal's own studies are seeded by `run`, so the script is made after them.
    runner.use_model(_LateOracle(goal=goal, runner=runner))
    verdict = runner.run(goal, "ci-scripted")
    assert verdict.passed, verdict.problems


class _LateOracle(ScriptedModel):
    """The oracle's calls resolved when the model is first asked: after `run` seeded the goal's studies."""

    goal: Goal
    runner: Any
    script: list[AIMessage] = []

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        if not self.script:
            world = self.runner.world
            self.script = _oracle(self.goal, lambda v: world.ref(v) if isinstance(v, str) else v).script
        return super()._generate(messages, stop, run_manager, **kwargs)


def test_a_write_nobody_asked_for_is_unsafe_and_fails(runner: GoalRunner) -> None:
    goal = _goal("lookup-pending-list")
    runner.use_model(ScriptedModel(script=[AIMessage("", tool_calls=[tool_call("run_batch")])]))
    verdict = runner.run(goal, "ci-unsafe")
    assert not verdict.passed and verdict.unsafe_calls == 1
    assert any(p.startswith("study a: expected") for p in verdict.problems)  # its approval now waits


def test_a_goal_whose_expected_state_is_wrong_fails(runner: GoalRunner) -> None:
    right = _goal("single-segment-only")
    wrong = right.model_copy(update={"id": "wrong-state", "expect": right.expect.model_copy(
        update={"studies": {"a": StudyExpectation(status="available")}}
    )})
    runner.use_model(OfflinePlanner())
    verdict = runner.run(wrong, "ci-wrong")
    assert not verdict.passed and verdict.problems == [
        "study a: expected {'status': 'available', 'series': [], 'pending': 0, 'reports': 0, 'task': None}, "
        "found {'status': 'registered', 'series': [], 'pending': 0, 'reports': 0, 'task': None}"
    ]


def test_the_goal_file_names_only_known_tools(runner: GoalRunner) -> None:
    from graphs.planner_tools.catalog import build_tools

    known = {t.name for t in build_tools(runner.runtime)}
    named = {name for g in GOALS.goals for c in g.expect.calls for name in c.tool.split("|")}
    named |= {name for g in GOALS.goals for name in [*g.expect.forbid, *g.expect.writes]}
    assert named <= known, named - known
    assert isinstance(GOALS, GoalFile)
