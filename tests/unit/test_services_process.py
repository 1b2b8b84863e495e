"""The PID-file process manager, on a tiny HTTP server of our own (no Orthanc needed)."""

from __future__ import annotations

import io
import socket
import sys
from pathlib import Path

import pytest
from rich.console import Console

from agent.services import process
from agent.services.process import ServiceError, ServiceSpec, free_port

pytestmark = pytest.mark.unit


def _spec(tmp_path: Path, port: int, command: list[str] | None = None) -> ServiceSpec:
    marker = str(tmp_path / "marker")
    return ServiceSpec(
        name="toy server",
        command=command or [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", marker],
        cwd=tmp_path,
        ports=[port],
        health_url=f"http://127.0.0.1:{port}/",
        pid_file=tmp_path / "toy.pid",
        log_file=tmp_path / "toy.log",
        executable_marker=marker,
    )


def test_start_is_idempotent_and_stop_uses_the_pid(tmp_path: Path) -> None:
    (tmp_path / "marker").mkdir()
    spec = _spec(tmp_path, free_port())
    first = process.start(spec, timeout_s=20)
    assert first.healthy and first.pid is not None
    second = process.start(spec, timeout_s=20)
    assert second.pid == first.pid
    assert int(spec.pid_file.read_text()) == first.pid
    assert process.stop(spec) is True
    assert not spec.pid_file.exists()
    assert process.status(spec).detail == "stopped"
    assert process.stop(spec) is False


def test_port_taken_by_someone_else_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(ServiceError, match=rf"port {port} .* already in use"):
            process.start(_spec(tmp_path, port), timeout_s=5)


def test_server_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    spec = _spec(tmp_path, free_port(), [sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"])
    spec = spec.model_copy(update={"executable_marker": "-c"})
    with pytest.raises(ServiceError, match="exited during start-up(.|\n)*bad config"):
        process.start(spec, timeout_s=10)
    assert not spec.pid_file.exists()


def test_stale_pid_file_of_another_program_is_not_signalled(tmp_path: Path) -> None:
    spec = _spec(tmp_path, free_port())
    spec.pid_file.write_text("1\n")
    assert process.tracked_pid(spec) is None
    assert process.stop(spec) is False


def test_status_shows_whole_urls_and_log_paths_in_80_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.commands import output
    from agent.commands.services import print_status

    log_file = tmp_path / "a-run-directory-deep-enough" / "to-need-more-than-eighty-columns" / "orthanc.log"
    rows = [
        process.ServiceStatus(
            name="Orthanc (PACS)",
            running=True,
            pid=4242,
            url="http://127.0.0.1:48042/system",
            healthy=True,
            log_file=log_file,
            detail="running (pid 4242)",
        ),
        process.ServiceStatus(
            name="FHIR R4 server (sekmet-fhir)",
            running=False,
            pid=None,
            url="http://127.0.0.1:48080/fhir/metadata",
            healthy=False,
            log_file=tmp_path / "fhir.log",
            detail="stopped",
        ),
    ]
    out = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=out, width=80, color_system=None))
    print_status(rows)
    printed = out.getvalue()
    assert len(str(log_file)) > 80
    for row in rows:
        assert row.url in printed and str(row.log_file) in printed, printed
    assert "4242" in printed and "stopped" in printed
