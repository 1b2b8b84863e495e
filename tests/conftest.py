"""Fixtures shared by every test tier.

`live_settings` starts a private Orthanc and FHIR server for the test session (free ports,
a temporary run directory) and stops exactly those processes afterwards, so the suite never
touches the user's own demo services. `shared_data` is the real CT data in ../shared/data.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import services
from agent.settings import PROJECT_ROOT, Settings
from tests.oidc_provider import Provider, running_provider

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_service_settings(run_dir: Path) -> Settings:
    """Settings for a private pair of servers on free ports; fast retries so faults show quickly."""
    return Settings(
        run_dir=run_dir,
        orthanc_http_port=free_port(),
        orthanc_dicom_port=free_port(),
        fhir_port=free_port(),
        http_timeout_s=10.0,
        http_retry_attempts=3,
        http_retry_backoff_s=0.1,
        _env_file=None,
    )


@pytest.fixture(scope="session")
def live_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a running Orthanc (DICOMweb + DIMSE) and FHIR R4 server."""
    settings = make_service_settings(tmp_path_factory.mktemp("services"))
    try:
        services.up(settings)
    except services.ServiceError as exc:
        services.down(settings)
        pytest.fail(f"could not start the test services: {exc}")
    yield settings
    services.down(settings)


@pytest.fixture(scope="session")
def oidc_app_port() -> int:
    """The port the OIDC browser test serves the app on: the provider's client redirects there."""
    return free_port()


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory, oidc_app_port: int) -> Iterator[Provider]:
    """A real OpenID provider (npm's oidc-provider, tests/oidc/) on 127.0.0.1, stopped by its pid afterwards."""
    redirect_uri = f"http://127.0.0.1:{oidc_app_port}/auth/callback"
    try:
        with running_provider(tmp_path_factory.mktemp("oidc"), free_port(), redirect_uri) as provider:
            yield provider
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"could not start the OpenID provider: {exc}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data. Required in CI; on a user's machine without it, those tests skip."""
    if (SHARED_DATA / "lidc-idri-0001" / "dicom").is_dir():
        return SHARED_DATA
    message = f"real CT data not found at {SHARED_DATA} (see docs/architecture.md, Tests)"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI requires it")
    pytest.skip(message)
