"""The API with the OpenID provider's access tokens: an API client of a hospital that signs its
people in with OpenID Connect. The real provider (npm's oidc-provider) issues the tokens; the
service (`create_app`, over uvicorn) checks them against the provider's keys."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from agent.api.app import create_app
from agent.parts import fhir_client
from agent.settings import Settings
from tests.conftest import free_port
from tests.integration.workflow_helpers import (
    assert_nothing_written,
    assert_written_once,
    phantom_spec,
    retire,
    seed_phantom,
)
from tests.oidc_provider import (
    API_AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    OPERATOR,
    OTHER_CLIENT_ID,
    RADIOLOGIST,
    Provider,
    code_flow_tokens,
)
from tests.uvicorn_thread import serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(live_settings: Settings, oidc_provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = live_settings.model_copy(update={
        "run_dir": tmp_path_factory.mktemp("oidc-api") / "run",
        "oidc_issuer": oidc_provider.issuer,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret": SecretStr(CLIENT_SECRET),
        "oidc_audience": API_AUDIENCE,
        "oidc_redirect_url": oidc_provider.redirect_uri,
    })
    with serving(create_app(settings), free_port()) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client


def bearer(provider: Provider, user: object, client_id: str = CLIENT_ID) -> dict[str, str]:
    token = code_flow_tokens(provider, user, client_id=client_id)["access_token"]  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {token}"}


def _wait_for_approval(api: httpx.Client, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = api.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        assert not job["error"], job["error"]
        if job["report"] and job["report"]["pending"]:
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not reach its approval in 300 s")


def test_provider_tokens_operator_starts_radiologist_signs(
    api: httpx.Client, oidc_provider: Provider, live_settings: Settings, tmp_path: Path
) -> None:
    operator = bearer(oidc_provider, OPERATOR)
    me = api.get("/api/v1/auth/me", headers=operator).json()
    assert (me["id"], me["issuer"], me["roles"], me["auth_method"]) == (
        OPERATOR.username, oidc_provider.issuer, ["operator"], "oidc"
    )
    study = seed_phantom(live_settings, tmp_path / "phantom", phantom_spec(4711, "OIDC-API"))
    try:
        started = api.post("/api/v1/jobs", json={"kind": "study", "imaging_study_id": study.imaging_study_id}, headers=operator)
        assert started.status_code == 202, started.text
        [pending] = _wait_for_approval(api, operator, started.json()["job_id"])["report"]["pending"]
        decision = f"/api/v1/approvals/{pending['interrupt_id']}/decision"

        assert api.post(decision, json={"decision": "approve"}, headers=operator).status_code == 403
        # the provider's token for another application is not a token for this one
        elsewhere = api.post(
            decision, json={"decision": "approve"}, headers=bearer(oidc_provider, RADIOLOGIST, OTHER_CLIENT_ID)
        )
        assert elsewhere.status_code == 401 and "'aud'" in elsewhere.json()["detail"]
        assert_nothing_written(live_settings, study)

        answered = api.post(decision, json={"decision": "approve"}, headers=bearer(oidc_provider, RADIOLOGIST))
        assert answered.status_code == 200, answered.text
        assert [o["outcome"] for o in answered.json()["outcomes"]] == ["completed"]
        written = assert_written_once(live_settings, study)
        [person] = [a for a in written.provenance.agent if a.type.coding[0].code == "verifier"]
        assert (person.who.identifier.system, person.who.identifier.value) == (oidc_provider.issuer, RADIOLOGIST.username)
        with fhir_client(live_settings) as fhir:
            practitioner = fhir.read("Practitioner", person.who.reference.split("/")[1])
        assert practitioner.name[0].text == RADIOLOGIST.name
    finally:
        retire(live_settings, [study])
