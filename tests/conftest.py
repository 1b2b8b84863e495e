"""Fixtures shared by every test tier.

`live_settings` starts a private Orthanc and FHIR server for the test session (free ports,
a temporary run directory) and stops exactly those processes afterwards, so the suite never
touches the user's own demo services. `postgres_cluster` does the same for PostgreSQL, and
`state_url` / `state_engine` give a test the runtime's database on each backend it is
parametrized over (`tests/state_databases.py`); `redis_broker` is a private Redis for the workers. `shared_data` is the real CT data in ../shared/data.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from agent import services
from agent.private_files import protect_run_dir
from agent.services import process
from agent.services.postgres import PostgresCluster
from agent.services.process import free_port
from agent.settings import PROJECT_ROOT, Settings
from tests.brokers import running_redis
from tests.ci import missing
from tests.oidc_provider import Provider, running_provider
from tests.state_databases import BACKENDS, ServiceError, fresh_database, running_cluster, unavailable
from tools.state.database import sqlite_url
from tools.state.database import state_engine as build_state_engine
from tools.state.migrate import upgrade

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def make_service_settings(run_dir: Path, **update: object) -> Settings:
    """Settings for a private pair of servers on free ports; fast retries so faults show quickly.

    The Orthanc password is set here, not generated into the run directory, so settings copied
    onto another run directory (many tests do) still reach these servers."""
    return Settings(
        run_dir=run_dir,
        orthanc_http_port=free_port(),
        orthanc_dicom_port=free_port(),
        orthanc_password=secrets.token_urlsafe(16),
        fhir_port=free_port(),
        http_timeout_s=10.0,
        http_retry_attempts=3,
        http_retry_backoff_s=0.1,
        _env_file=None,
        **update,
    )


def with_pacs_url(settings: Settings, url: str) -> Settings:
    """The settings with the PACS reached at `url` (a proxy in front of it) with the same credentials."""
    auth = settings.dicomweb_http_auth()
    return settings.model_copy(
        update={"dicomweb_url": url, "dicomweb_auth": auth.kind, "dicomweb_username": auth.username,
                "dicomweb_password": auth.password}
    )


def pacs_env(settings: Settings) -> dict[str, str]:
    """The environment that points a CLI subprocess at these settings' PACS, with its credentials."""
    auth = settings.dicomweb_http_auth()
    env = {"IMAGING_AGENT_DICOMWEB_URL": settings.dicomweb_url, "IMAGING_AGENT_DICOMWEB_AUTH": auth.kind}
    if auth.username:
        env["IMAGING_AGENT_DICOMWEB_USERNAME"] = auth.username
    if auth.password:
        env["IMAGING_AGENT_DICOMWEB_PASSWORD"] = auth.password.get_secret_value()
    return env


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
def dicom_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A private Orthanc with its DICOM server turned on (off by default): for the DIMSE tests."""
    settings = make_service_settings(tmp_path_factory.mktemp("dicom-services"), orthanc_dicom_enabled=True)
    protect_run_dir(settings.run_dir)
    orthanc = services.orthanc_spec(settings)
    try:
        process.start(orthanc, settings.service_start_timeout_s)
    except services.ServiceError as exc:
        process.stop(orthanc)
        pytest.fail(f"could not start the DICOM test PACS: {exc}")
    yield settings
    process.stop(orthanc)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data. Required in CI; on a user's machine without it, those tests skip."""
    if (SHARED_DATA / "lidc-idri-0001" / "dicom").is_dir():
        return SHARED_DATA
    missing(f"real CT data not found at {SHARED_DATA}", "see docs/architecture.md, Tests")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A private PostgreSQL 15 for the session (free port, 127.0.0.1), stopped by its PID afterwards."""
    try:
        with running_cluster(free_port()) as cluster:
            yield cluster
    except ServiceError as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def redis_broker() -> Iterator[str]:
    """A private Redis (Debian's redis-server, free 127.0.0.1 port, password) for the session; its broker URL."""
    try:
        with running_redis(free_port()) as url:
            yield url
    except ServiceError as exc:
        missing(f"Redis for the worker tests: {exc}", "./scripts/bootstrap.sh installs the Debian package redis-server")


@pytest.fixture(params=BACKENDS)
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database for the runtime's state; a test that uses it runs once on each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "agent.sqlite")
        return
    with fresh_database(request.getfixturevalue("postgres_cluster")) as url:
        yield url


@pytest.fixture()
def database(state_url: str) -> Iterator[Engine]:
    """The runtime's database, not migrated (the runtime migrates it); the runtimes of a test share it
    as processes on one database would."""
    engine = build_state_engine(state_url)
    yield engine
    engine.dispose()


@pytest.fixture()
def state_engine(state_url: str) -> Iterator[Engine]:
    """An engine over `state_url`, migrated to the newest schema, disposed afterwards."""
    engine = build_state_engine(state_url)
    upgrade(engine)
    yield engine
    engine.dispose()
