"""`imaging-agent services up|down|status` as a user runs it, against the real servers."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from agent.settings import PROJECT_ROOT
from tests.conftest import free_port

pytestmark = pytest.mark.integration

CLI = str(PROJECT_ROOT / ".venv" / "bin" / "imaging-agent")


def _run(args: list[str], env: dict[str, str], columns: int = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env={**env, "COLUMNS": str(columns)}, capture_output=True, text=True, timeout=180
    )


def _pids(run_dir: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in run_dir.glob("*/*.pid")}


def test_up_is_idempotent_status_reports_and_down_stops_exactly_ours(tmp_path: Path) -> None:
    orthanc_port, fhir_port = free_port(), free_port()
    env = {
        **os.environ,
        "IMAGING_AGENT_RUN_DIR": str(tmp_path),
        "IMAGING_AGENT_ORTHANC_HTTP_PORT": str(orthanc_port),
        "IMAGING_AGENT_ORTHANC_DICOM_PORT": str(free_port()),
        "IMAGING_AGENT_FHIR_PORT": str(fhir_port),
    }
    try:
        first = _run(["services", "up"], env)
        assert first.returncode == 0, first.stdout + first.stderr
        pids = _pids(tmp_path)
        assert set(pids) == {"orthanc", "fhir"}
        config = (tmp_path / "orthanc" / "orthanc.json").read_text()
        assert '"RemoteAccessAllowed": false' in config

        second = _run(["services", "up"], env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert _pids(tmp_path) == pids, "a second `up` must find the running servers, not start new ones"

        # An 80-column terminal still shows every URL and log path whole.
        status = _run(["services", "status"], env, columns=80)
        assert status.returncode == 0
        assert "Orthanc" in status.stdout and "FHIR" in status.stdout
        assert str(pids["orthanc"]) in status.stdout
        for whole in (
            f"http://127.0.0.1:{orthanc_port}/system",
            f"http://127.0.0.1:{fhir_port}/fhir/metadata",
            str(tmp_path / "orthanc" / "orthanc.log"),
            str(tmp_path / "fhir" / "fhir.log"),
        ):
            assert whole in status.stdout, status.stdout
    finally:
        down = _run(["services", "down"], env)
    assert down.returncode == 0
    assert "stopped" in down.stdout
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    after = _run(["services", "status"], env)
    assert after.returncode == 1
    assert "stopped" in after.stdout


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        env = {
            **os.environ,
            "IMAGING_AGENT_RUN_DIR": str(tmp_path),
            "IMAGING_AGENT_ORTHANC_HTTP_PORT": str(taken),
            "IMAGING_AGENT_ORTHANC_DICOM_PORT": str(free_port()),
            "IMAGING_AGENT_FHIR_PORT": str(free_port()),
        }
        result = _run(["services", "up"], env)
    _run(["services", "down"], env)
    assert result.returncode == 1
    assert f"port {taken}" in result.stdout and "already in use" in result.stdout


def test_scale_adds_postgres_and_redis_on_loopback_and_down_stops_them_by_pid() -> None:
    # Not under pytest's 0700 tmp folders: PostgreSQL's system user must be able to enter the parents.
    parent = Path(tempfile.mkdtemp(prefix="imaging-agent-scale-"))
    parent.chmod(0o755)
    run_dir = parent / "run"
    postgres_port, redis_port = free_port(), free_port()
    env = {
        **os.environ,
        "IMAGING_AGENT_RUN_DIR": str(run_dir),
        "IMAGING_AGENT_ORTHANC_HTTP_PORT": str(free_port()),
        "IMAGING_AGENT_ORTHANC_DICOM_PORT": str(free_port()),
        "IMAGING_AGENT_FHIR_PORT": str(free_port()),
        "IMAGING_AGENT_POSTGRES_PORT": str(postgres_port),
        "IMAGING_AGENT_REDIS_PORT": str(redis_port),
    }
    env.pop("IMAGING_AGENT_DATABASE_URL", None)
    pids: dict[str, int] = {}
    try:
        up = _run(["services", "up", "--scale"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        pids = _pids(run_dir)
        assert set(pids) == {"orthanc", "fhir", "postgres", "redis"}
        # PostgreSQL refuses root: it runs as its own system user; both listen on 127.0.0.1 only.
        uid = int(Path(f"/proc/{pids['postgres']}/status").read_text().split("Uid:")[1].split()[0])
        assert pwd.getpwuid(uid).pw_name == ("imaging-agent-db" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name)
        assert _listening_on(postgres_port) == {"127.0.0.1"} and _listening_on(redis_port) == {"127.0.0.1"}
        # The run directory stays closed: its group (the database user's own) may only pass through.
        assert stat.S_IMODE(run_dir.stat().st_mode) in (0o700, 0o710)
        url_file = run_dir / "postgres" / "database-url"
        assert stat.S_IMODE(url_file.stat().st_mode) == 0o600 and str(url_file) in up.stdout
        # The agent keeps its state there: the schema is made on first use, an account lands in PostgreSQL.
        scaled = {**env, "IMAGING_AGENT_DATABASE_URL": url_file.read_text().strip()}
        added = subprocess.run(
            [CLI, "users", "add", "dr-scale", "--role", "radiologist", "--password-stdin"],
            input="correct horse battery\n", env=scaled, capture_output=True, text=True, timeout=120,
        )
        assert added.returncode == 0, added.stdout + added.stderr
        with psycopg.connect(url_file.read_text().strip()) as conn:
            assert conn.execute("SELECT username FROM users").fetchall() == [("dr-scale",)]
        assert not (run_dir / "agent.sqlite").exists()
        redis_cli = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(redis_port), "ping"], capture_output=True, text=True,
            env={**os.environ, "REDISCLI_AUTH": (run_dir / "redis" / "password").read_text().strip()}, timeout=30,
        )
        assert redis_cli.stdout.strip() == "PONG"
        status = _run(["services", "status"], env)
        assert status.returncode == 0 and "PostgreSQL 15" in status.stdout and "Redis" in status.stdout
        assert f"pid {pids['postgres']}" in status.stdout and f"pid {pids['redis']}" in status.stdout
    finally:
        down = _run(["services", "down"], env)
        shutil.rmtree(parent, ignore_errors=True)
    assert down.returncode == 0 and "PostgreSQL 15: stopped" in down.stdout and "Redis: stopped" in down.stdout
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _listening_on(port: int) -> set[str]:
    """The local addresses a TCP port listens on (from /proc/net/tcp and tcp6)."""
    addresses: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    addresses.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    addresses.add(socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))))
    return addresses
