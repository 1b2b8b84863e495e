"""`imaging-agent eval`: the goal suite against private local services, with any planner; a table and a JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.commands import output
from agent.settings import PROJECT_ROOT, get_settings

GOALS = PROJECT_ROOT / "benchmarks" / "goals.yaml"
RESULTS = PROJECT_ROOT / "benchmarks" / "results"


def evaluate(
    model: Annotated[str | None, typer.Option(
        "--model", help="openai:NAME (OpenAI), or NAME with --base-url; default: the planner the settings choose."
    )] = None,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="An OpenAI-compatible server (vLLM, Ollama, LM Studio), e.g. http://127.0.0.1:8000/v1."
    )] = None,
    offline: Annotated[bool, typer.Option("--offline", help="The offline intent planner (no LLM).")] = False,
    goals_file: Annotated[Path, typer.Option("--goals", help="The goal file.")] = GOALS,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only these goal ids or categories.")] = None,
    results: Annotated[Path, typer.Option("--results", help="Where the JSON results go.")] = RESULTS,
) -> None:
    """Run the goal suite: seed a private run directory and servers, run every goal, grade by state and tool trace."""
    import logging
    from datetime import UTC, datetime

    from agent.evaluation.goals import load_goals
    from agent.evaluation.grading import Verdict
    from agent.evaluation.report import print_results, save_results, summarize
    from agent.evaluation.runner import private_services, private_settings, run_goals
    from agent.llm import build_chat_model, planner_info

    if offline and (model or base_url):
        output.error("--offline runs no model: leave out --model and --base-url")
        raise typer.Exit(2)
    if base_url and not model:
        output.error("--base-url needs --model NAME (the model the server serves)")
        raise typer.Exit(2)
    update: dict[str, object] = {}
    if offline:
        update["llm_provider"] = "offline"
    elif model:
        update.update(llm_provider="openai", llm_model=model.removeprefix("openai:"))
        if base_url:
            update["openai_base_url"] = base_url
    try:
        goal_file = load_goals(goals_file)
    except ValueError as exc:
        output.error(exc)
        raise typer.Exit(2) from exc
    chosen = [g for g in goal_file.goals if not only or g.id in only or g.category in only]
    if not chosen:
        output.error(f"no goal in {goals_file} is named or of a category in {only}")
        raise typer.Exit(2)
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    base = get_settings().model_copy(update=update)
    work = base.run_dir / "eval" / stamp
    settings = private_settings(base, work / "run")
    chat_model = build_chat_model(settings)
    planner = planner_info(settings)
    label = "offline" if planner.kind == "offline" else settings.llm_model
    output.console.print(f"[dim]planner: {output.escape(planner.description)}; {len(chosen)} goals; run directory {work}[/dim]")

    def progress(verdict: Verdict) -> None:
        output.console.print(f"[dim]{output.escape(verdict.goal)}: {'pass' if verdict.passed else 'FAIL'}[/dim]")

    # The world's failed study fails on purpose in every batch; a goal's own failure is in its verdict.
    logging.getLogger("graphs.study").setLevel(logging.ERROR)
    with private_services(settings):
        verdicts = run_goals(settings, chat_model, goal_file, chosen, work, stamp, on_verdict=progress)
    summary = summarize(label, verdicts)
    print_results(output.console, summary, verdicts)
    path = save_results(results, summary, verdicts)
    output.console.print(f"results: {path}")
