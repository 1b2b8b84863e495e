"""The project's tables come from Alembic migrations (tools/state/migrations), on SQLite and PostgreSQL.

A fresh database is brought to the newest revision and then matches tools/state/schema.py exactly;
several processes starting at once migrate one after the other; a SQLite state file written by the
stores before migrations existed keeps its rows.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from argon2 import PasswordHasher
from sqlalchemy import Engine, inspect

from agent.cli import main
from agent.settings import get_settings
from tests.conftest import free_port
from tests.identities import signed_decision
from tools.identity.accounts import AccountStore
from tools.state.database import StateDatabaseError, sqlite_url, state_engine
from tools.state.migrate import current_revision, head_revision, upgrade
from tools.state.schema import metadata
from tools.workflow.decisions import DecisionStore, payload_sha256
from tools.workflow.jobs import JobStore
from tools.workflow.leases import LeaseStore

pytestmark = pytest.mark.unit

TABLES = {"jobs", "job_leases", "approval_decisions", "approved_plans", "users"}


def test_a_fresh_database_is_upgraded_to_the_declared_schema(state_url: str) -> None:
    engine = state_engine(state_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
        assert differences == [], "tools/state/schema.py and the migrations disagree: add a migration"
        upgrade(engine)  # at the newest revision already: nothing to do
    finally:
        engine.dispose()


def test_processes_starting_together_migrate_one_after_the_other(state_url: str) -> None:
    engines = [state_engine(state_url) for _ in range(4)]
    start = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def migrate(engine: Engine) -> None:
        start.wait()
        try:
            upgrade(engine)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert current_revision(engines[0]) == head_revision()
    finally:
        for engine in engines:
            engine.dispose()


# The statements the stores ran before migrations existed (graphs/runtime.py, tools/workflow/leases.py,
# tools/workflow/decisions.py, tools/identity/accounts.py), as they were.
LEGACY_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS jobs (thread_id TEXT PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL,"
    " created_at TEXT NOT NULL, status TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS job_leases (thread_id TEXT PRIMARY KEY, token TEXT NOT NULL,"
    " pid INTEGER NOT NULL, host TEXT NOT NULL, boot_id TEXT, pid_started INTEGER,"
    " acquired_at REAL NOT NULL, heartbeat_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS approval_decisions (thread_id TEXT NOT NULL, request_id TEXT NOT NULL,"
    " payload_sha256 TEXT NOT NULL, decision TEXT NOT NULL, PRIMARY KEY (thread_id, request_id))",
    "CREATE TABLE IF NOT EXISTS approved_plans (request_id TEXT NOT NULL, plan_sha256 TEXT NOT NULL,"
    " PRIMARY KEY (request_id, plan_sha256))",
    "CREATE TABLE IF NOT EXISTS users (username TEXT PRIMARY KEY, display_name TEXT NOT NULL,"
    " roles TEXT NOT NULL, password_hash TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,"
    " failed_attempts INTEGER NOT NULL DEFAULT 0, locked_until TEXT, created_at TEXT NOT NULL)",
]


def test_a_state_file_of_the_previous_version_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite"
    decision = signed_decision(action="approve", reviewer_id="dr-a", reviewer_name="Dr. A")
    payload = payload_sha256({"request_id": "1.2.3"})
    with sqlite3.connect(path) as conn:
        for statement in LEGACY_SCHEMA[:-1]:  # an older file still: no users table yet
            conn.execute(statement)
        conn.execute("INSERT INTO jobs VALUES ('study-1', 'study', 'ImagingStudy/s-1', '2026-01-01T00:00:00+00:00', 'waiting-approval')")
        conn.execute("INSERT INTO job_leases VALUES ('study-1', 'tok', 4242, 'ct-node-2', 'boot', 99, 1.5, 2.5)")
        conn.execute("INSERT INTO approval_decisions VALUES ('study-1', '1.2.3', ?, ?)", (payload, decision.model_dump_json()))
        conn.execute("INSERT INTO approved_plans VALUES ('1.2.3', 'abc')")
        conn.execute("CREATE TABLE checkpoints (thread_id TEXT)")  # LangGraph's own: left alone
    engine = state_engine(sqlite_url(path))
    try:
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        [job] = JobStore(engine).list()
        assert (job.thread_id, job.status) == ("study-1", "waiting-approval")
        lease = LeaseStore(engine, expiry_s=60, heartbeat_s=10).last_holder("study-1")
        assert lease is not None and (lease.pid, lease.host, lease.heartbeat_at) == (4242, "ct-node-2", 2.5)
        decisions = DecisionStore(engine)
        assert decisions.get("study-1", "1.2.3", payload) == decision
        assert "checkpoints" in inspect(engine).get_table_names()
        # The table that was missing is made, and works.
        accounts = AccountStore(engine)
        accounts.add("dr-a", "correct horse battery", ["radiologist"])
        assert accounts.authenticate("dr-a", "correct horse battery", datetime.now(UTC)).id == "dr-a"
    finally:
        engine.dispose()


def test_a_previous_users_table_keeps_its_accounts(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite"
    with sqlite3.connect(path) as conn:
        for statement in LEGACY_SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO users (username, display_name, roles, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            ("dr-lee", "Dr. Ana Lee", "radiologist", PasswordHasher().hash("correct horse battery"), "2026-01-01T00:00:00+00:00"),
        )
    engine = state_engine(sqlite_url(path))
    try:
        upgrade(engine)
        principal = AccountStore(engine).authenticate("dr-lee", "correct horse battery")
        assert (principal.display_name, principal.roles) == ("Dr. Ana Lee", {"radiologist"})
    finally:
        engine.dispose()


def test_an_unreachable_database_is_named_with_what_to_do() -> None:
    engine = state_engine(f"postgresql://agent:hunter2@127.0.0.1:{free_port()}/state")
    try:
        with pytest.raises(StateDatabaseError, match=r"cannot open the state database postgresql\+psycopg://agent:\*\*\*@") as failed:
            upgrade(engine)
    finally:
        engine.dispose()
    assert "services up --scale" in str(failed.value) and "hunter2" not in str(failed.value)


def test_the_command_line_names_an_unreachable_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGING_AGENT_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("IMAGING_AGENT_DATABASE_URL", f"postgresql://agent:hunter2@127.0.0.1:{free_port()}/state")
    monkeypatch.setattr(sys, "argv", ["imaging-agent", "approvals", "list"])
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        get_settings.cache_clear()
    printed = " ".join(capsys.readouterr().out.split())  # the console of agent/commands/output.py
    assert exited.value.code == 1
    assert "error: cannot open the state database postgresql+psycopg://agent:***@127.0.0.1" in printed
    assert "correct IMAGING_AGENT_DATABASE_URL" in printed and "hunter2" not in printed
