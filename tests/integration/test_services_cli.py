"""`imaging-agent services up|down|status` as a user runs it, against the real servers."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

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
