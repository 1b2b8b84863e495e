"""The scale-out servers of `services up --scale`: PostgreSQL 15 (the runtime's state) and Redis
(the workers' broker), both from Debian, on 127.0.0.1, their data in the run directory.

Without `--scale` none of this runs and nothing changes for the demo.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agent.private_files import read_or_create_secret
from agent.services.postgres import (
    PostgresCluster,
    cluster_user,
    create_database,
    ensure_system_user,
    initialise,
    postgres_spec,
)
from agent.services.process import ServiceError, ServiceSpec
from agent.settings import Settings


def postgres_cluster(settings: Settings) -> PostgresCluster:
    return PostgresCluster(
        base=settings.run_dir / "postgres",
        port=settings.postgres_port,
        system_user=cluster_user(settings.postgres_system_user),
    )


def prepare_postgres(settings: Settings) -> PostgresCluster:
    """Initialise the cluster once and let its system user reach it through the 0700 run directory."""
    cluster = postgres_cluster(settings)
    if cluster.system_user is not None:
        _check_passage(settings.run_dir, cluster.system_user)
        os.chown(settings.run_dir, -1, ensure_system_user(cluster.system_user).pw_gid)
        settings.run_dir.chmod(0o710)  # kept by protect_run_dir (agent/private_files.py)
    initialise(cluster)
    database_url_file(settings).write_text(cluster.url().get_secret_value() + "\n")
    return cluster


def _check_passage(run_dir: Path, user: str) -> None:
    """PostgreSQL's system user must be able to enter every folder above the run directory."""
    for folder in run_dir.resolve().parents:
        if not folder.stat().st_mode & 0o001:
            raise ServiceError(
                f"PostgreSQL runs as the system user {user} (it refuses root), who cannot enter {folder} "
                f"(mode {folder.stat().st_mode & 0o777:o}) on the way to the run directory {run_dir}. Choose a run "
                "directory whose parent folders others may enter (IMAGING_AGENT_RUN_DIR), or allow it: chmod o+x "
                f"{folder}."
            )


def database_url_file(settings: Settings) -> Path:
    """Where `services up --scale` leaves the local PostgreSQL's URL (0600: it holds the password)."""
    return settings.run_dir / "postgres" / "database-url"


def broker_url_file(settings: Settings) -> Path:
    """Where `services up --scale` leaves the local Redis's URL for IMAGING_AGENT_BROKER_URL (0600: it holds the password)."""
    return settings.run_dir / "redis" / "broker-url"


def _redis_server() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if found is None:
        raise ServiceError(
            "Redis is not installed. Run ./scripts/bootstrap.sh (it installs the Debian package redis-server)."
        )
    return found


def redis_spec(settings: Settings) -> ServiceSpec:
    base = settings.run_dir / "redis"
    base.mkdir(parents=True, exist_ok=True)
    password = read_or_create_secret(base / "password").get_secret_value()
    config_file = base / "redis.conf"
    # The password goes in a 0600 file, never on a command line that `ps` shows.
    config_file.touch(mode=0o600)
    config_file.chmod(0o600)
    config_file.write_text(
        "\n".join([
            "bind 127.0.0.1",
            f"port {settings.redis_port}",
            f"dir {base}",
            "protected-mode yes",
            "daemonize no",
            # Redis rewrites its process title; keep the config file in it for the PID reuse guard.
            'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
            f"requirepass {password}",
            # Queued work survives a restart of Redis (files 0600 under the run directory's umask).
            "appendonly yes",
            "",
        ])
    )
    broker_url_file(settings).write_text(f"redis://:{password}@127.0.0.1:{settings.redis_port}/0\n")
    redis_cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    return ServiceSpec(
        name="Redis",
        command=[_redis_server(), str(config_file)],
        cwd=base,
        env={"REDISCLI_AUTH": password},  # read by redis-cli for the health probe
        ports=[settings.redis_port],
        health_url=f"redis://127.0.0.1:{settings.redis_port}/0",
        # redis-cli exits 0 on an error reply too: the answer must be PONG.
        health_command=["sh", "-c", f'test "$("{redis_cli}" -h 127.0.0.1 -p {settings.redis_port} ping)" = PONG'],
        pid_file=base / "redis.pid",
        log_file=base / "redis.log",
        executable_marker=str(config_file),
    )


def scale_services(settings: Settings) -> list[ServiceSpec]:
    return [postgres_spec(postgres_cluster(settings)), redis_spec(settings)]


def scale_services_made(settings: Settings) -> bool:
    """Whether `services up --scale` ever ran here (then `down` and `status` cover its servers too)."""
    return (settings.run_dir / "postgres").is_dir() or (settings.run_dir / "redis").is_dir()


def after_start(settings: Settings) -> None:
    """What needs the servers running: the agent's database in the cluster."""
    create_database(postgres_cluster(settings))


__all__ = ["after_start", "broker_url_file", "database_url_file", "prepare_postgres", "redis_spec", "scale_services", "scale_services_made"]
