"""Record text on the app's approval card, as Chromium renders it: the characters as typed.

A StudyDescription holding rich markup, Markdown emphasis, an HTML image and a link, and a
patient name with HTML, shown on the Approvals tab's card of a job started outside the app.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from agent.runtime import AgentRuntime
from agent.settings import Settings
from tests.browser.conftest import clean_run_dir, save_screenshot, served_app
from tests.identities import signed_decision
from tests.integration.workflow_helpers import phantom_spec, retire, seed_phantom
from tests.scripted_model import ScriptedModel

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# DICOM LO: at most 64 characters.
DESCRIPTION = "[b]OK[/b] **OK** <img src=x onerror=alert(1)> [go](http://e)"
PATIENT_NAME = "<b>Lee</b>^**Dr**"


def test_the_card_shows_markup_and_html_from_the_records_as_text(
    private_services: Settings, page: Page, artifacts: Path, tmp_path: Path
) -> None:
    settings = clean_run_dir(private_services, "untrusted")
    spec = phantom_spec(311, "UI-0311", study_description=DESCRIPTION, patient_name=PATIENT_NAME)
    seeded = seed_phantom(settings, tmp_path / "UI-0311", spec)
    try:
        with served_app(settings, ScriptedModel(script=[])) as url, AgentRuntime(settings) as cli:
            started = cli.start_study(seeded.imaging_study_id)
            [pending] = started.pending
            page.goto(url, wait_until="load")
            page.get_by_role("tab", name="Approvals").click()
            page.locator("#approvals-refresh").click()
            page.locator("#pending-list").locator("input").click()
            page.get_by_role("option", name=re.compile(re.escape(seeded.imaging_study_id))).click()
            summary = page.locator("#panel-card-summary")
            expect(summary).to_contain_text(DESCRIPTION, timeout=60_000)
            expect(summary).to_contain_text("<b>Lee</b>")
            expect(summary).to_contain_text("**Dr**")
            save_screenshot(page, artifacts, "untrusted-card.png")
            assert summary.locator("img").count() == 0, "the description's <img> became an element"
            assert summary.locator("a").count() == 0, "the description's link became a link"
            bold = summary.locator("strong, b").all_inner_texts()
            assert "OK" not in bold and "Lee" not in bold and "Dr" not in bold, bold
            decision = signed_decision("reject", "dr-test", "Dr. Test", reason="test")
            cli.decide(started.thread_id, {pending.interrupt_id: decision})
    finally:
        retire(settings, [seeded])
