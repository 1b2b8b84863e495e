"""Settings: every field documented in .env.example, local URLs following the ports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.settings import PROJECT_ROOT, Settings
from tools.http import HttpAuth
from tools.state.database import parse_database_url

pytestmark = pytest.mark.unit


def test_env_example_lists_every_setting() -> None:
    # OpenTelemetry's settings keep their standard names (OTEL_...), without the project's prefix.
    documented = set(
        re.findall(r"^#?\s*(?:IMAGING_AGENT_|(?=OTEL_))([A-Z0-9_]+)=", (PROJECT_ROOT / ".env.example").read_text(), re.M)
    )
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - documented == set(), "settings missing from .env.example"
    assert documented - fields == set(), ".env.example names settings that do not exist"


def test_local_urls_follow_ports() -> None:
    settings = Settings(orthanc_http_port=9100, orthanc_dicom_port=9101, fhir_port=9102, _env_file=None)
    assert settings.dicomweb_url == "http://127.0.0.1:9100/dicom-web"
    assert settings.fhir_url == "http://127.0.0.1:9102/fhir"
    assert settings.dimse_port == 9101


def test_explicit_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGING_AGENT_FHIR_URL", "https://ehr.example.org/fhir")
    assert Settings(_env_file=None).fhir_url == "https://ehr.example.org/fhir"


def test_auth_requires_credentials() -> None:
    with pytest.raises(ValueError, match="token"):
        HttpAuth(kind="bearer").headers()
    with pytest.raises(ValueError, match="username or password"):
        HttpAuth(kind="basic", username="u").basic()
    assert HttpAuth(kind="bearer", token="t").headers() == {"Authorization": "Bearer t"}
    assert HttpAuth(kind="basic", username="u", password="p").basic() == ("u", "p")


def test_the_state_is_in_sqlite_unless_a_postgresql_url_is_set(tmp_path: Path) -> None:
    assert Settings(run_dir=tmp_path, _env_file=None).state_database_url() == f"sqlite:///{tmp_path.resolve()}/agent.sqlite"
    scaled = Settings(database_url="postgresql://agent:pw@10.0.0.5:5432/state", _env_file=None)
    # psycopg 3, the driver installed (SQLAlchemy's plain postgresql:// would mean psycopg2).
    assert parse_database_url(scaled.state_database_url()).drivername == "postgresql+psycopg"


def test_an_unusable_database_url_is_refused_naming_the_forms_without_its_password() -> None:
    with pytest.raises(ValueError, match=r"IMAGING_AGENT_DATABASE_URL: unsupported database URL 'mysql://u:\*\*\*@h/db'") as refused:
        Settings(database_url="mysql://u:hunter2@h/db", _env_file=None)
    assert "postgresql://USER:PASSWORD@HOST:PORT/DATABASE" in str(refused.value) and "hunter2" not in str(refused.value)
