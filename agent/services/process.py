"""Start, watch and stop one local server process, tracked by a PID file.

Only the PID this module wrote is ever signalled, and only while that process still runs
the executable we started: a PID reused by the system after a crash is left alone.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, SecretStr

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for private servers in tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceError(RuntimeError):
    """A local service could not be started or stopped; the message says what to do."""


class ServiceSpec(BaseModel):
    """Everything needed to run one server: how to start it and how to know it is up."""

    name: str
    command: list[str]
    cwd: Path
    env: dict[str, str] = {}
    ports: list[int]
    health_url: str
    """Where it answers: an HTTP URL asked for a 200, or, with `health_command`, only shown."""
    health_auth: tuple[str, SecretStr] | None = None
    """User and password for the health URL (the local Orthanc asks for them)."""
    health_command: list[str] | None = None
    """A command that exits 0 when the server is ready (servers that speak no HTTP: PostgreSQL, Redis)."""
    user: str | None = None
    """The system user to run as (PostgreSQL refuses root); None: this process's user."""
    stop_signal: int = signal.SIGTERM
    """What asks the server to stop: PostgreSQL's SIGTERM waits for every client, SIGINT does not."""
    pid_file: Path
    log_file: Path
    executable_marker: str
    """A substring of the process command line that identifies our server (PID reuse guard)."""


class ServiceStatus(BaseModel):
    name: str
    running: bool
    pid: int | None
    url: str
    healthy: bool
    log_file: Path
    detail: str


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def run_as(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a child as `user` with that user's own group and no other
    (`user=` alone would keep root's group and supplementary groups)."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _healthy(spec: ServiceSpec) -> bool:
    if spec.health_command is not None:
        probe = subprocess.run(
            spec.health_command, env={**os.environ, **spec.env}, capture_output=True, timeout=10, check=False
        )
        return probe.returncode == 0
    auth = (spec.health_auth[0], spec.health_auth[1].get_secret_value()) if spec.health_auth else None
    try:
        return httpx.get(spec.health_url, timeout=2.0, auth=auth).status_code == 200
    except httpx.HTTPError:
        return False


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"


def tracked_pid(spec: ServiceSpec) -> int | None:
    """The PID from our PID file, if that process is alive and is still our server."""
    try:
        pid = int(spec.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if _pid_alive(pid) and spec.executable_marker in _cmdline(pid):
        return pid
    return None


def status(spec: ServiceSpec) -> ServiceStatus:
    pid = tracked_pid(spec)
    healthy = _healthy(spec) if pid else False
    if pid and healthy:
        detail = f"running (pid {pid})"
    elif pid:
        detail = f"process {pid} runs but {spec.health_url} does not answer yet"
    elif any(_port_in_use(p) for p in spec.ports):
        detail = f"not started by us, but port(s) {spec.ports} are in use by another program"
    else:
        detail = "stopped"
    return ServiceStatus(
        name=spec.name,
        running=pid is not None,
        pid=pid,
        url=spec.health_url,
        healthy=healthy,
        log_file=spec.log_file,
        detail=detail,
    )


def start(spec: ServiceSpec, timeout_s: float) -> ServiceStatus:
    """Start the server unless ours already runs; wait until its health URL answers 200."""
    pid = tracked_pid(spec)
    if pid is not None:
        _wait_healthy(spec, pid, timeout_s)
        return status(spec)
    spec.pid_file.unlink(missing_ok=True)
    taken = [p for p in spec.ports if _port_in_use(p)]
    if taken:
        raise ServiceError(
            f"{spec.name}: port {', '.join(map(str, taken))} on 127.0.0.1 is already in use by another "
            f"program, so {spec.name} cannot start. Stop that program, or choose other ports in .env "
            f"(see .env.example) and run `imaging-agent services up` again."
        )
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    spec.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with spec.log_file.open("ab") as log_fh:
        # A new session keeps the server alive after the CLI exits and out of the
        # terminal's Ctrl-C; we stop it by its PID only.
        proc = subprocess.Popen(
            spec.command,
            cwd=spec.cwd,
            env={**os.environ, **spec.env},
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **run_as(spec.user),
        )
    spec.pid_file.write_text(f"{proc.pid}\n")
    log.info("%s started, pid %d, log %s", spec.name, proc.pid, spec.log_file)
    _wait_healthy(spec, proc.pid, timeout_s)
    return status(spec)


def _wait_healthy(spec: ServiceSpec, pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _healthy(spec):
            return
        if not _pid_alive(pid):
            spec.pid_file.unlink(missing_ok=True)
            raise ServiceError(
                f"{spec.name} exited during start-up. Last lines of {spec.log_file}:\n{_log_tail(spec.log_file)}"
            )
        time.sleep(0.25)
    raise ServiceError(
        f"{spec.name} (pid {pid}) did not answer {spec.health_url} within {timeout_s:.0f} s. "
        f"It is still running; see {spec.log_file}, or stop it with `imaging-agent services down`."
        f"\nLast log lines:\n{_log_tail(spec.log_file)}"
    )


def stop(spec: ServiceSpec, timeout_s: float = 15.0) -> bool:
    """Stop our server by its PID (SIGTERM, then SIGKILL). Returns whether one was running."""
    pid = tracked_pid(spec)
    if pid is None:
        spec.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, spec.stop_signal)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _pid_alive(pid):
        _reap(pid)
        time.sleep(0.1)
    if _pid_alive(pid):
        log.warning("%s (pid %d) did not stop within %.0f s; sending SIGKILL", spec.name, pid, timeout_s)
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
    spec.pid_file.unlink(missing_ok=True)
    log.info("%s stopped (pid %d)", spec.name, pid)
    return True


def _reap(pid: int) -> None:
    # When the server is our own child (tests start it in-process), collect its exit status
    # so it does not linger as a zombie that still "exists" for os.kill(pid, 0).
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
