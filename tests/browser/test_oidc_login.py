"""Signing in through a real OpenID provider in headless Chromium, and deciding as that person.

npm's oidc-provider (started by the suite, tests/oidc_provider.py) is the hospital's identity
provider. The app is `imaging-agent serve`'s own application (agent/api/app.py): the sign-in
routes and the Gradio app at /ui behind them. Nothing reaches the
app without a session; an operator cannot approve; a radiologist signed in at the provider
approves, and the FHIR Practitioner and Provenance name that principal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from pydantic import SecretStr

from agent.api.app import create_app
from agent.parts import fhir_client
from agent.runtime import AgentRuntime
from agent.settings import Settings
from tests.browser.conftest import clean_run_dir, save_screenshot
from tests.integration.workflow_helpers import assert_written_once, phantom_spec, retire, seed_phantom
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, OPERATOR, RADIOLOGIST, SCOPES, OidcUser, Provider
from tests.uvicorn_thread import serving

pytestmark = [pytest.mark.browser, pytest.mark.integration]

WORKFLOW_TIMEOUT_MS = 240_000


@contextmanager
def served_behind_login(settings: Settings, port: int) -> Iterator[str]:
    """`imaging-agent serve`'s application on 127.0.0.1:`port` (the provider's registered redirect)."""
    with serving(create_app(settings), port) as url:
        yield url


def _oidc_settings(settings: Settings, provider: Provider) -> Settings:
    return settings.model_copy(update={
        "oidc_issuer": provider.issuer,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret": SecretStr(CLIENT_SECRET),
        "oidc_redirect_url": provider.redirect_uri,
        "oidc_scopes": SCOPES,
    })


def _sign_in(page: Page, base: str, provider: Provider, user: OidcUser) -> None:
    """Open the app, land on the provider's own login form, sign in, come back to the app."""
    page.goto(f"{base}/ui/", wait_until="load")
    expect(page).to_have_url(re.compile(re.escape(provider.issuer) + "/interaction/"))
    page.locator("#username").fill(user.username)
    page.locator("#password").fill(user.password)
    page.locator("#sign-in").click()
    expect(page).to_have_url(f"{base}/ui/")
    expect(page.locator("#signed-in")).to_contain_text(f"Signed in as {user.name}")


def _choose_pending(page: Page, imaging_study_id: str) -> None:
    page.get_by_role("tab", name="Approvals").click()
    page.locator("#approvals-refresh").click()
    page.locator("#pending-list").locator("input").click()
    page.get_by_role("option", name=re.compile(re.escape(imaging_study_id))).click()
    expect(page.locator("#panel-card-findings")).to_contain_text("Left lung", timeout=WORKFLOW_TIMEOUT_MS)


def test_nothing_answers_without_a_session(oidc_provider: Provider, oidc_app_port: int, private_services: Settings) -> None:
    settings = _oidc_settings(clean_run_dir(private_services, "oidc-closed"), oidc_provider)
    with served_behind_login(settings, oidc_app_port) as base:
        with httpx.Client(base_url=base) as anonymous:
            assert anonymous.get("/ui/").status_code == 303  # a browser is sent to /login
            assert anonymous.get("/ui/config").status_code == 401
            # what the Approve button calls: the Gradio queue, refused without a session
            join = anonymous.post("/ui/gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x"})
            assert join.status_code == 401
        with httpx.Client(base_url=base, cookies={"imaging_agent_session": "ana.lee"}) as forged:
            assert forged.get("/ui/config").status_code == 401


def test_oidc_sign_in_operator_refused_radiologist_approves(
    oidc_provider: Provider, oidc_app_port: int, private_services: Settings, page: Page, artifacts: Path,
    tmp_path: Path,
) -> None:
    settings = _oidc_settings(clean_run_dir(private_services, "oidc-login"), oidc_provider)
    seeded = seed_phantom(settings, tmp_path / "UI-0310", phantom_spec(310, "UI-0310"))
    try:
        with served_behind_login(settings, oidc_app_port) as base, AgentRuntime(settings) as cli:
            started = cli.start_study(seeded.imaging_study_id)
            assert started.pending

            # A wrong password stays at the provider.
            page.goto(f"{base}/ui/", wait_until="load")
            page.locator("#username").fill(RADIOLOGIST.username)
            page.locator("#password").fill("not-her-password")
            page.locator("#sign-in").click()
            expect(page.locator("#error")).to_contain_text("Wrong user name or password")

            # An operator may look, not sign.
            _sign_in(page, base, oidc_provider, OPERATOR)
            _choose_pending(page, seeded.imaging_study_id)
            expect(page.locator("#panel-reviewer")).to_have_count(0)  # nobody types a reviewer name
            page.locator("#panel-approve").click()
            expect(page.locator("#panel-notice")).to_contain_text("needs the radiologist role")
            assert cli.report(started.thread_id).pending, "an operator's approve must decide nothing"
            save_screenshot(page, artifacts, "oidc-operator-refused.png")

            # Sign out here and at the provider; the app is closed again.
            page.goto(f"{base}/logout", wait_until="load")
            page.get_by_role("button", name=re.compile("sign me out", re.I)).click()
            page.wait_for_load_state("load")

            _sign_in(page, base, oidc_provider, RADIOLOGIST)
            _choose_pending(page, seeded.imaging_study_id)
            save_screenshot(page, artifacts, "oidc-radiologist-card.png")
            page.locator("#panel-approve").click()
            expect(page.locator("#panel-notice")).to_contain_text(
                f"ImagingStudy/{seeded.imaging_study_id}: completed", timeout=WORKFLOW_TIMEOUT_MS
            )
            save_screenshot(page, artifacts, "oidc-radiologist-approved.png")
        # The provider's principal signed: its issuer is the identifier system, its `sub` the value.
        written = assert_written_once(settings, seeded)
        [person] = [a for a in written.provenance.agent if a.type.coding[0].code == "verifier"]
        assert (person.who.identifier.system, person.who.identifier.value) == (oidc_provider.issuer, RADIOLOGIST.username)
        assert person.who.display == RADIOLOGIST.name
        with fhir_client(settings) as fhir:
            practitioner = fhir.read("Practitioner", person.who.reference.split("/")[1])
        [identifier] = practitioner.identifier
        assert (identifier.system, identifier.value) == (oidc_provider.issuer, RADIOLOGIST.username)
        assert practitioner.name[0].text == RADIOLOGIST.name
    finally:
        retire(settings, [seeded])
