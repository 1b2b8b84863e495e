"""`imaging-agent worker` and `process` refuse what cannot work with workers, saying what to do, before
any broker is reached."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from agent.cli import app
from agent.settings import get_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def run_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ("IMAGING_AGENT_BROKER_URL", "IMAGING_AGENT_DATABASE_URL", "IMAGING_AGENT_WORK_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IMAGING_AGENT_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("COLUMNS", "300")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def invoke(*args: str) -> Result:
    get_settings.cache_clear()
    return CliRunner().invoke(app, list(args))


def test_a_worker_needs_a_broker() -> None:
    result = invoke("worker")
    assert result.exit_code == 2 and "IMAGING_AGENT_BROKER_URL is not set" in result.output


def test_a_worker_takes_only_known_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGING_AGENT_BROKER_URL", "redis://127.0.0.1:1/0")
    result = invoke("worker", "--queues", "studies,gpu")
    assert result.exit_code == 2 and "unknown queue(s) gpu; choose from studies, engines" in result.output


def test_process_yes_is_refused_when_workers_run_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGING_AGENT_BROKER_URL", "redis://127.0.0.1:1/0")
    result = invoke("process", "--pending", "--yes")
    assert result.exit_code == 2 and "imaging-agent approvals approve" in result.output
