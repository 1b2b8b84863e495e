"""Fixtures of the workflow integration tests: a private run directory, and seeded studies
taken off the shared work list afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.settings import Settings
from tests.integration.workflow_helpers import SeededStudy, retire


@pytest.fixture()
def settings(live_settings: Settings, tmp_path: Path) -> Settings:
    """The live services with a run directory (checkpoints, work files) of this test's own."""
    return live_settings.model_copy(update={"run_dir": tmp_path / "run"})


@pytest.fixture()
def state_settings(settings: Settings, state_url: str) -> Settings:
    """`settings` with the runtime's state on each backend in turn (a test using it runs twice):
    the run directory's SQLite file as by default, or a fresh PostgreSQL database."""
    if state_url.startswith("sqlite"):
        return settings
    return settings.model_copy(update={"database_url": SecretStr(state_url)})


@pytest.fixture()
def seeded(live_settings: Settings) -> Iterator[list[SeededStudy]]:
    """The test's studies (appended as they are seeded), taken off the shared work list afterwards."""
    studies: list[SeededStudy] = []
    yield studies
    retire(live_settings, studies)
