"""`imaging-agent serve`: the API as an attacker and a radiologist meet it, over a real uvicorn server.

The service runs as its own process (the installed console script) on a free 127.0.0.1 port,
against the session's Orthanc and FHIR server, with a run directory of this module's own.
Accounts are made with `imaging-agent users add`, tokens fetched from the service itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.parts import fhir_client
from agent.settings import Settings
from tests.conftest import free_port, pacs_env
from tests.integration.workflow_helpers import (
    SeededStudy,
    assert_nothing_written,
    assert_written_once,
    phantom_spec,
    retire,
    seed_phantom,
)
from tools.identity.principal import LOCAL_ISSUER, Principal
from tools.identity.tokens import TokenSigner, load_or_create_secret

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).parent / "imaging-agent"
PASSWORDS = {"dr-api": "radiologist pass 1", "op-api": "operator pass 1", "dr-locked": "locked pass 1"}
ROLES = {"dr-api": "radiologist", "op-api": "operator", "dr-locked": "radiologist"}
MAX_FAILURES = 3


def _env(run_dir: Path, live_settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGING_AGENT_")}
    env.update(
        IMAGING_AGENT_RUN_DIR=str(run_dir),
        **pacs_env(live_settings),  # the closed PACS: its URL, user and password
        IMAGING_AGENT_FHIR_URL=live_settings.fhir_url,
        IMAGING_AGENT_LOGIN_MAX_FAILURES=str(MAX_FAILURES),
        COLUMNS="200",
    )
    return env


class Service:
    def __init__(self, url: str, run_dir: Path) -> None:
        self.url = url
        self.run_dir = run_dir
        self.http = httpx.Client(base_url=url, timeout=120)

    def token(self, username: str, password: str | None = None) -> httpx.Response:
        return self.http.post("/api/v1/auth/token", data={"username": username, "password": password or PASSWORDS[username]})

    def bearer(self, username: str) -> dict[str, str]:
        response = self.token(username)
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"the service at {url} did not answer in 60 s"
        time.sleep(0.3)


@contextmanager
def running_service(run_dir: Path, env: dict[str, str], users: dict[str, tuple[str, str]]) -> Iterator[Service]:
    """`imaging-agent serve` on a free 127.0.0.1 port with local accounts (name -> (role, password)),
    stopped by its PID afterwards."""
    for name, (role, password) in users.items():
        added = subprocess.run(
            [str(CLI), "users", "add", name, "--role", role, "--display-name", f"Dr. {name}", "--password-stdin"],
            input=password + "\n", env=env, capture_output=True, text=True, timeout=60,
        )
        assert added.returncode == 0, added.stdout + added.stderr
    port = free_port()
    log = (run_dir / "serve.log").open("w")
    process = subprocess.Popen(
        [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process, run_dir / "serve.log")
        yield Service(url, run_dir)
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def service(live_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    run_dir = tmp_path_factory.mktemp("api") / "run"
    users = {name: (ROLES[name], password) for name, password in PASSWORDS.items()}
    with running_service(run_dir, _env(run_dir, live_settings), users) as service:
        yield service


def _wait_for_approval(service: Service, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = service.http.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        assert not job["error"], job["error"]
        if job["report"] and job["report"]["pending"]:
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not reach its approval in 300 s")


def test_health_needs_no_token_and_the_rest_does(service: Service) -> None:
    assert service.http.get("/api/v1/health").json() == {"status": "ok"}
    for path in ("/api/v1/approvals", "/api/v1/jobs", "/api/v1/auth/me"):
        assert service.http.get(path).status_code == 401
        assert service.http.get(path, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert service.http.get("/docs").status_code == 200
    assert "/api/v1/approvals/{approval_id}/decision" in service.http.get("/openapi.json").json()["paths"]


def test_sign_in_by_json_as_well_as_form(service: Service) -> None:
    response = service.http.post("/api/v1/auth/token", json={"username": "op-api", "password": PASSWORDS["op-api"]})
    assert response.status_code == 200 and response.json()["token_type"] == "bearer"
    me = service.http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"})
    assert me.json()["id"] == "op-api" and me.json()["roles"] == ["operator"]


def test_lockout_after_repeated_failures(service: Service) -> None:
    for _ in range(MAX_FAILURES):
        assert service.token("dr-locked", "wrong password").status_code == 401
    refused = service.token("dr-locked")
    assert refused.status_code == 401 and "locked" in refused.json()["detail"]


def test_an_unknown_engine_is_refused_before_any_job(service: Service) -> None:
    """An injected engine name (issue 10) is a 422 and opens no job, for a study and for a batch."""
    operator = service.bearer("op-api")
    before = service.http.get("/api/v1/jobs", headers=operator).json()
    injected = "x,urn:imaging-agent:task|abc"
    for body in ({"kind": "study", "imaging_study_id": "any-study"}, {"kind": "batch"}):
        refused = service.http.post("/api/v1/jobs", json={**body, "engine": injected}, headers=operator)
        assert refused.status_code == 422, refused.text
        assert "unknown segmentation engine" in refused.json()["detail"]
    assert service.http.get("/api/v1/jobs", headers=operator).json() == before


def test_only_a_freshly_signed_in_radiologist_approves_and_is_recorded(
    service: Service, live_settings: Settings, tmp_path: Path
) -> None:
    study: SeededStudy = seed_phantom(live_settings, tmp_path / "phantom", phantom_spec(4701, "API-APPROVE"))
    try:
        _approve_through_the_api(service, live_settings, study)
    finally:
        retire(live_settings, [study])


def _approve_through_the_api(service: Service, live_settings: Settings, study: SeededStudy) -> None:
    operator = service.bearer("op-api")
    started = service.http.post("/api/v1/jobs", json={"kind": "study", "imaging_study_id": study.imaging_study_id}, headers=operator)
    assert started.status_code == 202, started.text
    job = _wait_for_approval(service, operator, started.json()["job_id"])
    [pending] = job["report"]["pending"]
    approval_id = pending["interrupt_id"]
    listed = service.http.get("/api/v1/approvals", headers=operator).json()
    assert approval_id in {a["approval_id"] for a in listed}
    assert service.http.get(f"/api/v1/approvals/{approval_id}", headers=operator).json()["request"]["imaging_study_id"] == study.imaging_study_id
    decision = f"/api/v1/approvals/{approval_id}/decision"
    approve = {"decision": "approve"}

    # No token, an operator's token: no decision.
    assert service.http.post(decision, json=approve).status_code == 401
    forbidden = service.http.post(decision, json=approve, headers=operator)
    assert forbidden.status_code == 403 and "radiologist" in forbidden.json()["detail"]
    # A radiologist whose sign-in is older than the signing window (the token itself still valid).
    signer = TokenSigner(load_or_create_secret(service.run_dir / "api-token-secret"), ttl_s=3600)
    me = service.http.get("/api/v1/auth/me", headers=service.bearer("dr-api")).json()
    stale_time = datetime.now(UTC) - timedelta(seconds=Settings(_env_file=None).signing_window_s + 60)
    stale = signer.issue(Principal.model_validate({**me, "auth_time": stale_time}))
    refused = service.http.post(decision, json=approve, headers={"Authorization": f"Bearer {stale}"})
    assert refused.status_code == 401 and "sign in again" in refused.json()["detail"]
    # A prefix of the id is not the id.
    radiologist = service.bearer("dr-api")
    assert service.http.post(f"/api/v1/approvals/{approval_id[:1]}/decision", json=approve, headers=radiologist).status_code == 404
    assert_nothing_written(live_settings, study)

    # The radiologist, freshly signed in: written, and recorded as that principal.
    answered = service.http.post(decision, json=approve, headers=radiologist)
    assert answered.status_code == 200, answered.text
    assert [o["outcome"] for o in answered.json()["outcomes"]] == ["completed"]
    written = assert_written_once(live_settings, study)
    [person] = [a for a in written.provenance.agent if a.type.coding[0].code == "verifier"]
    assert (person.who.identifier.system, person.who.identifier.value) == (LOCAL_ISSUER, "dr-api")
    assert person.who.display == "Dr. dr-api"
    assert written.report.resultsInterpreter[0].reference == person.who.reference
    with fhir_client(live_settings) as fhir:
        practitioner = fhir.read("Practitioner", person.who.reference.split("/")[1])
    [identifier] = practitioner.identifier
    assert (identifier.system, identifier.value) == (LOCAL_ISSUER, "dr-api")
    assert practitioner.name[0].text == "Dr. dr-api"
    assert any("dr-api" in (n.text or "") for n in written.task.note or [])
    # Answered once: a second decision finds nothing pending.
    assert service.http.post(decision, json=approve, headers=radiologist).status_code == 404


def _cli(service: Service, live_settings: Settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = _env(service.run_dir, live_settings)
    env["IMAGING_AGENT_API_PORT"] = service.url.rsplit(":", 1)[1]
    return subprocess.run([str(CLI), *args], input=stdin, env=env, capture_output=True, text=True, timeout=300)


def test_the_cli_decides_as_the_principal_it_signed_in_as(service: Service, live_settings: Settings, tmp_path: Path) -> None:
    """`imaging-agent login` then `approvals approve`: an operator is refused, a login kept for another
    service is refused, a radiologist's decision is recorded as that principal."""
    study: SeededStudy = seed_phantom(live_settings, tmp_path / "phantom", phantom_spec(4702, "CLI-LOGIN"))
    try:
        operator = service.bearer("op-api")
        started = service.http.post(
            "/api/v1/jobs", json={"kind": "study", "imaging_study_id": study.imaging_study_id}, headers=operator
        )
        job = _wait_for_approval(service, operator, started.json()["job_id"])
        approval_id = job["report"]["pending"][0]["interrupt_id"]

        assert _cli(service, live_settings, "login", "-u", "op-api", "--password-stdin", stdin=PASSWORDS["op-api"]).returncode == 0
        refused = _cli(service, live_settings, "approvals", "approve", approval_id)
        assert refused.returncode != 0 and "radiologist" in refused.stdout + refused.stderr
        assert_nothing_written(live_settings, study)

        # A kept login whose service is not the configured one: that service could vouch for anyone.
        login_file = service.run_dir / "cli-login.json"
        kept = login_file.read_text()
        login_file.write_text(kept.replace(service.url, "http://127.0.0.1:9"))
        elsewhere = _cli(service, live_settings, "approvals", "approve", approval_id)
        assert elsewhere.returncode != 0 and "configured service" in elsewhere.stdout + elsewhere.stderr
        assert_nothing_written(live_settings, study)

        assert _cli(service, live_settings, "login", "-u", "dr-api", "--password-stdin", stdin=PASSWORDS["dr-api"]).returncode == 0
        approved = _cli(service, live_settings, "approvals", "approve", approval_id)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        written = assert_written_once(live_settings, study)
        [person] = [a for a in written.provenance.agent if a.type.coding[0].code == "verifier"]
        assert (person.who.identifier.system, person.who.identifier.value) == (LOCAL_ISSUER, "dr-api")
    finally:
        _cli(service, live_settings, "logout")
        retire(live_settings, [study])


def test_imaging_agent_ui_serves_the_app_only_behind_the_sign_in(live_settings: Settings, tmp_path: Path) -> None:
    """Before, `imaging-agent ui` served the chat (patient names, previews, job starts) to anyone on the port."""
    port = free_port()
    env = _env(tmp_path / "run", live_settings)
    log = (tmp_path / "ui.log").open("w")
    process = subprocess.Popen([str(CLI), "ui", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_healthy(url, process, tmp_path / "ui.log")
        page = httpx.get(f"{url}/ui/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert httpx.get(f"{url}/ui/config").status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
