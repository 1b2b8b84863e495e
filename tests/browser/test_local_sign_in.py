"""The app at /ui of `imaging-agent serve` with local accounts (the embedded default), in Chromium:
signed in on the service's own form, a stale sign-in cannot sign, a fresh one approves, and the
Provenance names the local account."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from agent.api.app import create_app
from agent.identity import account_store
from agent.runtime import AgentRuntime
from agent.settings import Settings
from tests.browser.conftest import clean_run_dir, save_screenshot
from tests.conftest import free_port
from tests.integration.workflow_helpers import assert_written_once, phantom_spec, retire, seed_phantom
from tests.uvicorn_thread import serving
from tools.identity.principal import LOCAL_ISSUER

pytestmark = [pytest.mark.browser, pytest.mark.integration]

WORKFLOW_TIMEOUT_MS = 240_000
SIGNING_WINDOW_S = 30.0
USER, PASSWORD, NAME = "dr-local", "local radiologist pass", "Dr. Local"


def _sign_in(page: Page, base: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/login?next=/ui/", wait_until="load")
    page.locator("#username").fill(USER)
    page.locator("#password").fill(password)
    page.locator("#sign-in").click()


def test_local_account_signs_in_stale_refused_fresh_approves(
    private_services: Settings, page: Page, artifacts: Path, tmp_path: Path
) -> None:
    settings = clean_run_dir(private_services, "local-sign-in").model_copy(
        update={"signing_window_s": SIGNING_WINDOW_S}
    )
    with account_store(settings) as accounts:
        accounts.add(USER, PASSWORD, ["radiologist"], NAME)
    seeded = seed_phantom(settings, tmp_path / "UI-0320", phantom_spec(320, "UI-0320"))
    try:
        with serving(create_app(settings), free_port()) as base, AgentRuntime(settings) as cli:
            started = cli.start_study(seeded.imaging_study_id)
            page.goto(f"{base}/ui/", wait_until="load")
            expect(page.locator("#sign-in")).to_be_visible()  # sent to the sign-in form

            _sign_in(page, base, "not the password")
            expect(page.locator("#sign-in-error")).to_contain_text("sign-in refused")

            _sign_in(page, base)
            signed_in_at = time.monotonic()
            expect(page.locator("#signed-in")).to_contain_text(f"Signed in as {NAME}")
            page.get_by_role("tab", name="Approvals").click()
            page.locator("#approvals-refresh").click()
            page.locator("#pending-list").locator("input").click()
            page.get_by_role("option", name=seeded.imaging_study_id, exact=False).click()
            expect(page.locator("#panel-signed-in")).to_contain_text(f"{NAME} ({USER}, {LOCAL_ISSUER})")

            # The session is still open, but the sign-in is older than the signing window.
            time.sleep(max(0.0, SIGNING_WINDOW_S + 1 - (time.monotonic() - signed_in_at)))
            page.locator("#panel-approve").click()
            expect(page.locator("#panel-notice")).to_contain_text("sign in again")
            assert cli.report(started.thread_id).pending, "a stale sign-in must decide nothing"

            _sign_in(page, base)
            page.get_by_role("tab", name="Approvals").click()
            page.locator("#approvals-refresh").click()
            page.locator("#pending-list").locator("input").click()
            page.get_by_role("option", name=seeded.imaging_study_id, exact=False).click()
            page.locator("#panel-approve").click()
            expect(page.locator("#panel-notice")).to_contain_text(
                f"ImagingStudy/{seeded.imaging_study_id}: completed", timeout=WORKFLOW_TIMEOUT_MS
            )
            save_screenshot(page, artifacts, "local-sign-in-approved.png")
        written = assert_written_once(settings, seeded)
        [person] = [a for a in written.provenance.agent if a.type.coding[0].code == "verifier"]
        assert (person.who.identifier.system, person.who.identifier.value) == (LOCAL_ISSUER, USER)
        assert person.who.display == NAME
    finally:
        retire(settings, [seeded])
