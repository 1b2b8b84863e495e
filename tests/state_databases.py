"""The databases the state tests run on: a SQLite file, and a private PostgreSQL cluster.

The cluster is started once per test session as the dedicated system user (PostgreSQL refuses
root) on a free 127.0.0.1 port, in a folder under /tmp that user can reach (pytest's own tmp
folders are 0700 root), and stopped by its PID afterwards. Each test gets a database of its own.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from agent.services import process
from agent.services.postgres import PostgresCluster, cluster_user, create_database, initialise, postgres_spec
from agent.services.process import ServiceError
from tests.ci import missing

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
SYSTEM_USER = "imaging-agent-db"


@contextmanager
def running_cluster(port: int) -> Iterator[PostgresCluster]:
    base = Path(tempfile.mkdtemp(prefix="imaging-agent-pg-"))
    cluster = PostgresCluster(base=base, port=port, system_user=cluster_user(SYSTEM_USER))
    spec = None
    try:
        initialise(cluster)
        spec = postgres_spec(cluster)
        process.start(spec, timeout_s=60)
        yield cluster
    finally:
        if spec is not None:
            process.stop(spec)
        shutil.rmtree(base, ignore_errors=True)


def unavailable(reason: str) -> None:
    """Fail in CI (a test that needs a service never skips there); skip elsewhere, saying why."""
    missing(f"PostgreSQL for the state tests: {reason}", "./scripts/bootstrap.sh installs the Debian package postgresql")


@contextmanager
def fresh_database(cluster: PostgresCluster) -> Iterator[str]:
    """A new, empty database on the cluster, dropped afterwards; its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    create_database(cluster, name)
    try:
        yield cluster.url(name).get_secret_value()
    finally:
        with psycopg.connect(cluster.url("postgres").get_secret_value(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


__all__ = ["BACKENDS", "ServiceError", "fresh_database", "running_cluster", "unavailable"]
