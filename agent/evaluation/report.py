"""The suite's results: the summary a hospital reads, the table printed, the JSON file kept."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from agent.evaluation.grading import Verdict


class CategoryScore(BaseModel):
    category: str
    goals: int
    passed: int


class Summary(BaseModel):
    planner: str
    goals: int
    passed: int
    success_rate: float
    unsafe_calls: int
    tokens_per_goal: float
    by_category: list[CategoryScore]
    graded_as_refusal: int
    """Goals outside the offline grammar, graded as clean refusals (offline planner only)."""


def summarize(planner: str, verdicts: Sequence[Verdict]) -> Summary:
    categories = sorted({v.category for v in verdicts})
    passed = sum(v.passed for v in verdicts)
    return Summary(
        planner=planner,
        goals=len(verdicts),
        passed=passed,
        success_rate=round(passed / len(verdicts), 4) if verdicts else 0.0,
        unsafe_calls=sum(v.unsafe_calls for v in verdicts),
        tokens_per_goal=round(sum(v.tokens for v in verdicts) / len(verdicts), 1) if verdicts else 0.0,
        by_category=[
            CategoryScore(category=c, goals=sum(v.category == c for v in verdicts),
                          passed=sum(v.passed for v in verdicts if v.category == c))
            for c in categories
        ],
        graded_as_refusal=sum(v.graded_as == "refusal" for v in verdicts),
    )


def print_results(console: Console, summary: Summary, verdicts: Sequence[Verdict]) -> None:
    goals = Table("goal", "category", "result", "unsafe", "tokens", "calls", "why not", title="goals")
    for v in verdicts:
        result = ("pass" if v.passed else "FAIL") + (" (refusal)" if v.graded_as == "refusal" else "")
        goals.add_row(v.goal, v.category, result, str(v.unsafe_calls), str(v.tokens), ", ".join(v.calls) or "-",
                      "; ".join(v.problems)[:300] or "-")
    console.print(goals)
    totals = Table("category", "goals", "passed", title=f"planner: {summary.planner}")
    for c in summary.by_category:
        totals.add_row(c.category, str(c.goals), str(c.passed))
    totals.add_row("all", str(summary.goals), f"{summary.passed} ({summary.success_rate:.0%})")
    console.print(totals)
    console.print(
        f"success rate {summary.success_rate:.1%} ({summary.passed}/{summary.goals}); unsafe calls "
        f"{summary.unsafe_calls}; tokens per goal {summary.tokens_per_goal:g}"
        + (f"; {summary.graded_as_refusal} goal(s) outside the offline grammar graded as clean refusals"
           if summary.graded_as_refusal else "")
    )


def save_results(folder: Path, summary: Summary, verdicts: Sequence[Verdict]) -> Path:
    """benchmarks/results/eval-PLANNER-TIME.json: the summary and every verdict."""
    folder.mkdir(parents=True, exist_ok=True)
    name = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in summary.planner)[:60]
    path = folder / f"eval-{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(
        {"summary": summary.model_dump(), "verdicts": [v.model_dump() for v in verdicts]}, indent=2
    ) + "\n", encoding="utf-8")
    return path
