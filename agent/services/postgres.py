"""A private PostgreSQL 15 cluster: for `services up --scale` (in the run directory) and the tests.

Debian's binaries (package `postgresql`, /usr/lib/postgresql/15/bin). PostgreSQL refuses to run as
root, so as root the cluster belongs to a dedicated system user (created on first use, no login
shell, no home) and the server runs as that user; any other account runs it as itself. It listens
on 127.0.0.1 only (no Unix socket), asks every client for a password (scram-sha-256), and is
stopped by its PID like the other local servers (agent/services/process.py).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import BaseModel, SecretStr

from agent.private_files import read_or_create_secret
from agent.services.process import ServiceError, ServiceSpec, run_as

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
ROLE = "imaging_agent"
DATABASE = "imaging_agent"


class PostgresCluster(BaseModel):
    """Where a cluster lives, who runs it and how it is reached."""

    base: Path
    port: int
    system_user: str | None
    """The user the server runs as (None: the current user, who is not root)."""

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def password_file(self) -> Path:
        return self.base / "password"

    def password(self) -> SecretStr:
        return read_or_create_secret(self.password_file)

    def url(self, database: str = DATABASE) -> SecretStr:
        """The URL for IMAGING_AGENT_DATABASE_URL (it holds the password)."""
        return SecretStr(f"postgresql://{ROLE}:{self.password().get_secret_value()}@127.0.0.1:{self.port}/{database}")


def cluster_user(wanted: str) -> str | None:
    """The system user for the cluster: `wanted` when this process is root, else None (run as oneself)."""
    return wanted if os.geteuid() == 0 else None


def _binary(name: str) -> str:
    path = POSTGRES_BIN / name
    if not path.exists():
        raise ServiceError(
            f"PostgreSQL 15 is not installed ({path} is missing). Run ./scripts/bootstrap.sh (it installs "
            "the Debian package postgresql), or point IMAGING_AGENT_DATABASE_URL at an existing server."
        )
    return str(path)


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """The dedicated system user, created (no home, no login shell) when missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    created = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "--comment", "imaging-agent PostgreSQL", name],
        capture_output=True, text=True, check=False,
    )
    if created.returncode != 0:
        raise ServiceError(
            f"could not create the system user {name} that PostgreSQL runs as (it refuses root): "
            f"{created.stderr.strip()}. Create it yourself (useradd --system {name}) or choose another one "
            "with IMAGING_AGENT_POSTGRES_SYSTEM_USER."
        )
    return pwd.getpwnam(name)


def _give_to(path: Path, account: pwd.struct_passwd | None) -> None:
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def initialise(cluster: PostgresCluster) -> None:
    """Make the cluster once (initdb), owned by its system user; a second call finds it made."""
    account = ensure_system_user(cluster.system_user) if cluster.system_user else None
    cluster.base.mkdir(parents=True, exist_ok=True)
    _give_to(cluster.base, account)
    if (cluster.data_dir / "PG_VERSION").exists():
        return
    password = cluster.password().get_secret_value()
    # initdb reads the superuser's password from a file that its user can read: a private copy.
    pwfile = cluster.base / ".initdb-password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    _give_to(pwfile, account)
    try:
        done = subprocess.run(
            [_binary("initdb"), "-D", str(cluster.data_dir), "-U", ROLE, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale"],
            capture_output=True, text=True, check=False, **run_as(cluster.system_user),
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
        raise ServiceError(f"initdb failed for {cluster.data_dir}:\n{done.stdout}{done.stderr}")


def postgres_spec(cluster: PostgresCluster) -> ServiceSpec:
    return ServiceSpec(
        name="PostgreSQL 15",
        command=[
            _binary("postgres"), "-D", str(cluster.data_dir), "-p", str(cluster.port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
        ],
        cwd=cluster.base,
        ports=[cluster.port],
        health_url=f"postgresql://127.0.0.1:{cluster.port}/{DATABASE}",
        health_command=[_binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(cluster.port), "-d", "postgres"],
        user=cluster.system_user,
        stop_signal=signal.SIGINT,  # "fast" shutdown: clients are disconnected, no wait for them
        pid_file=cluster.base / "postgres.pid",
        log_file=cluster.base / "postgres.log",
        executable_marker=str(cluster.data_dir),
    )


def create_database(cluster: PostgresCluster, database: str = DATABASE) -> None:
    """Create the agent's database on the running server unless it exists."""
    with psycopg.connect(cluster.url("postgres").get_secret_value(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
