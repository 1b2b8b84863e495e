"""A PACS or FHIR server that stops, or hangs, mid-work: a clear error within the timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import services
from agent.parts import fhir_client, pacs_client
from agent.services.local import fhir_spec, orthanc_spec
from agent.services.process import stop
from agent.settings import Settings
from tests.conftest import make_service_settings
from tools.http.retry import ServiceUnavailableError

pytestmark = pytest.mark.integration


def _worst_case_s(settings: Settings) -> float:
    """Every try timing out, plus every backoff: the longest an honest failure may take."""
    policy = settings.retry_policy()
    backoff = sum(min(policy.backoff_s * 2**i, policy.max_backoff_s) for i in range(policy.attempts))
    return policy.attempts * policy.timeout_s + backoff + 5.0


@pytest.fixture()
def own_services(tmp_path: Path) -> Iterator[Settings]:
    settings = make_service_settings(tmp_path).model_copy(update={"http_timeout_s": 3.0})
    services.up(settings)
    yield settings
    services.down(settings)


def test_fhir_server_stopped_mid_test(own_services: Settings) -> None:
    with fhir_client(own_services) as fhir:
        assert fhir.capabilities().fhirVersion.startswith("4.")
        stop(fhir_spec(own_services))
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError) as caught:
            fhir.search("ImagingStudy", {"status": "registered"})
    assert time.monotonic() - started < _worst_case_s(own_services)
    assert "FHIR" in str(caught.value) and own_services.fhir_url.split("/fhir")[0] in str(caught.value)


def test_orthanc_stopped_mid_test(own_services: Settings) -> None:
    with pacs_client(own_services) as pacs:
        assert pacs.search_studies() == []
        stop(orthanc_spec(own_services))
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError) as caught:
            pacs.search_studies()
    assert time.monotonic() - started < _worst_case_s(own_services)
    assert "PACS" in str(caught.value)


@pytest.fixture()
def hanging_server() -> Iterator[str]:
    """Accepts connections and never answers: a server that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop_flag = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop_flag.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop_flag.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_hanging_servers_time_out(hanging_server: str, tmp_path: Path) -> None:
    settings = Settings(
        run_dir=tmp_path,
        fhir_url=f"{hanging_server}/fhir",
        dicomweb_url=f"{hanging_server}/dicom-web",
        http_timeout_s=1.0,
        http_retry_attempts=2,
        http_retry_backoff_s=0.1,
        _env_file=None,
    )
    started = time.monotonic()
    with fhir_client(settings) as fhir, pytest.raises(ServiceUnavailableError, match="timed out|Timeout"):
        fhir.read("Patient", "x")
    with pacs_client(settings) as pacs, pytest.raises(ServiceUnavailableError):
        pacs.search_studies()
    assert time.monotonic() - started < 2 * _worst_case_s(settings)
