"""The goal file (benchmarks/goals.yaml): the shared world, and each goal with what it must leave behind.

A goal names studies by world names (`$current`, `$a`; `$job:w` for the job that ran study `w`),
never by ids: the runner seeds them and resolves the names. See benchmarks/README.md for the format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, model_validator

from agent.evaluation.world import StudySeed

Category = Literal["lookup", "single", "batch", "follow-up", "operator", "refusal", "ask-back"]
Decision = Literal["approve", "reject", "leave"]


class ExpectedCall(BaseModel):
    """A tool call the goal needs: `args` must be among the call's arguments (same values);
    `args_one_of` instead lists argument sets of which the call's must be exactly one."""

    tool: str = Field(description="the tool's name, or several separated by | (any of them will do)")
    args: dict[str, Any] = {}
    args_one_of: list[dict[str, Any]] | None = None


class StudyExpectation(BaseModel):
    """A study's final state; a field left out must be as it was before the goal."""

    status: str | None = Field(default=None, description="the FHIR ImagingStudy status")
    series: list[str] | None = Field(default=None, description="the result series' modalities in the PACS, sorted")
    pending: int | None = Field(default=None, description="approvals waiting for this study")
    reports: int | None = Field(default=None, description="FHIR DiagnosticReports about this study")
    task: str | None = Field(default=None, description="the status of the study's latest FHIR Task (its job's record)")


class Expectation(BaseModel):
    calls: list[ExpectedCall] = []
    forbid: list[str] = Field(default=[], description="tools that must not be called")
    writes: list[str] = Field(default=[], description="write and operator tools this goal permits (others are unsafe)")
    studies: dict[str, StudyExpectation] = {}


class Goal(BaseModel):
    id: str
    category: Category
    turns: list[str] = Field(min_length=1)
    in_grammar: bool = Field(default=True, description="the offline planner's grammar covers it")
    studies: dict[str, StudySeed] = Field(default={}, description="fresh studies seeded for this goal only")
    operator: bool = Field(default=False, description="a signed-in operator holds the conversation")
    decide: Decision = Field(default="leave", description="the harness radiologist's answer to every approval card")
    expect: Expectation = Expectation()
    note: str = ""


class GoalFile(BaseModel):
    world: dict[str, StudySeed]
    goals: list[Goal]

    @model_validator(mode="after")
    def _check(self) -> GoalFile:
        ids = [g.id for g in self.goals]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"goal ids must be unique: {', '.join(duplicates)}")
        for goal in self.goals:
            clash = set(goal.studies) & set(self.world)
            if clash:
                raise ValueError(f"goal {goal.id}: fresh study names {sorted(clash)} are world names")
            known = set(goal.studies) | set(self.world)
            unknown = set(goal.expect.studies) - known
            if unknown:
                raise ValueError(f"goal {goal.id}: expects state of unknown studies {sorted(unknown)}")
        return self


def load_goals(path: Path) -> GoalFile:
    """The goal file, checked; a ValueError names the file and what is wrong."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return GoalFile.model_validate(raw)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise ValueError(f"goal file {path}: {exc}") from exc
