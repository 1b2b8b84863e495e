"""The worklist in the app at /ui (local accounts), in Chromium: a study another radiologist claimed shows
its holder, and the signed-in reviewer's decision on it is refused; once released, they claim it and
reject it with a reason code from the list."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from agent.api.app import create_app
from agent.identity import account_store
from agent.runtime import AgentRuntime
from agent.settings import Settings
from graphs.approval_worklist import claim, release
from tests.browser.conftest import clean_run_dir, save_screenshot
from tests.conftest import free_port
from tests.integration.workflow_helpers import assert_nothing_written, phantom_spec, retire, seed_phantom, task_of
from tests.uvicorn_thread import serving
from tools.identity.principal import LOCAL_ISSUER
from tools.workflow.claims import ClaimHolder

pytestmark = [pytest.mark.browser, pytest.mark.integration]

WORKFLOW_TIMEOUT_MS = 240_000
ANNE = ClaimHolder(id="dr-anne", issuer=LOCAL_ISSUER, name="Dr. Anne")
BORIS, PASSWORD, BORIS_NAME = "dr-boris", "boris reviews second", "Dr. Boris"


def _choose(page: Page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id}").locator("input").click()
    page.get_by_role("option", name=option, exact=False).click()


def test_the_list_shows_who_holds_a_study_and_refuses_the_others_decision(
    private_services: Settings, page: Page, artifacts: Path, tmp_path: Path
) -> None:
    settings = clean_run_dir(private_services, "claims")
    with account_store(settings) as accounts:
        accounts.add(BORIS, PASSWORD, ["radiologist"], BORIS_NAME)
    seeded = seed_phantom(settings, tmp_path / "UI-0330", phantom_spec(330, "UI-0330"))
    try:
        with serving(create_app(settings), free_port()) as base, AgentRuntime(settings) as cli:
            [pending] = cli.start_study(seeded.imaging_study_id).pending
            claim(cli, pending, ANNE)  # Dr. Anne took it in another browser

            page.goto(f"{base}/login?next=/ui/", wait_until="load")
            page.locator("#username").fill(BORIS)
            page.locator("#password").fill(PASSWORD)
            page.locator("#sign-in").click()
            expect(page.locator("#signed-in")).to_contain_text(f"Signed in as {BORIS_NAME}")
            page.get_by_role("tab", name="Approvals").click()
            page.locator("#approvals-refresh").click()
            expect(page.locator("#worklist")).to_contain_text("Dr. Anne (dr-anne) until")
            expect(page.locator("#worklist")).to_contain_text(seeded.imaging_study_id)
            _choose(page, "pending-list", seeded.imaging_study_id)
            expect(page.locator("#panel-claim")).to_contain_text("Claimed by Dr. Anne")
            expect(page.locator("#panel-claim")).to_contain_text("another reviewer")

            page.locator("#panel-approve").click()
            expect(page.locator("#panel-notice")).to_contain_text(
                f"Nothing was decided: ImagingStudy/{seeded.imaging_study_id}"
            )
            expect(page.locator("#panel-notice")).to_contain_text("is claimed by Dr. Anne (dr-anne")
            page.locator("#panel-claim-button").click()
            expect(page.locator("#panel-notice")).to_contain_text("Not claimed")
            save_screenshot(page, artifacts, "worklist-claimed-by-another.png")
            assert cli.report(pending.thread_id).pending, "a study another reviewer holds must not be decided"

            release(cli, pending, ANNE)
            page.locator("#panel-claim-button").click()
            expect(page.locator("#panel-claim")).to_contain_text(f"Claimed by {BORIS_NAME} ({BORIS}) until")
            expect(page.locator("#panel-claim")).to_contain_text("(you)")
            expect(page.locator("#worklist")).to_contain_text(f"{BORIS_NAME} ({BORIS}) until")
            _choose(page, "panel-reason-code", "Contour leaks outside the structure")
            save_screenshot(page, artifacts, "worklist-claimed-by-me.png")
            page.locator("#panel-reject").click()
            expect(page.locator("#panel-notice")).to_contain_text(
                f"ImagingStudy/{seeded.imaging_study_id}: rejected", timeout=WORKFLOW_TIMEOUT_MS
            )
            expect(page.locator("#worklist")).to_contain_text("No approval is waiting")
        task = task_of(settings, seeded)
        assert task.statusReason.coding[0].code == "contour-leak"
        assert task.statusReason.text == "Contour leaks outside the structure"
        assert_nothing_written(settings, seeded)
    finally:
        retire(settings, [seeded])
