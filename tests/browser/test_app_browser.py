"""The Gradio app in headless Debian Chromium: the example goal, the approval card, Approve, done.

Private Orthanc + FHIR server, one small phantom per test, the app served in this process.
The first test drives the chat with a scripted model that calls `run_batch` (independent of the
planner); the second uses the default planner (the offline intent planner); the third answers,
in the Approvals tab, a job started outside the app (as the CLI does: one durable store).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from playwright.sync_api import Locator, Page, expect

from agent.parts import fhir_client
from agent.runtime import AgentRuntime
from agent.settings import Settings
from tests.browser.conftest import clean_run_dir, save_screenshot, served_app
from tests.integration.workflow_helpers import (
    SeededStudy,
    assert_nothing_written,
    assert_written_once,
    phantom_spec,
    retire,
    seed_phantom,
)
from tests.scripted_model import ScriptedModel, tool_call
from tools.results.fhir_report import REVIEWER_ID_SYSTEM

pytestmark = [pytest.mark.browser, pytest.mark.integration]

GOAL = "analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS"
WORKFLOW_TIMEOUT_MS = 240_000


def _textbox(page: Page, elem_id: str) -> Locator:
    return page.locator(f"#{elem_id}").locator("textarea, input").first


def _expect_preview_loaded(page: Page, prefix: str) -> None:
    preview = page.locator(f"#{prefix}-card-previews img").first
    expect(preview).to_be_visible(timeout=WORKFLOW_TIMEOUT_MS)
    expect(preview).to_have_js_property("complete", True)
    assert preview.evaluate("img => img.naturalWidth") > 0, "the preview PNG did not load"


def _goal_to_completion(
    page: Page, url: str, settings: Settings, seeded: SeededStudy, artifacts: Path, shot: str, reviewer: str
) -> None:
    """Type the example goal, check the approval card, approve, and see the study completed."""
    page.goto(url, wait_until="load")
    expect(page.locator("#planner-status")).to_contain_text("Planner (offline): offline intent planner")
    expect(page.locator("#services-status")).to_contain_text("PACS up")
    expect(page.locator("#services-status")).to_contain_text("FHIR up")

    _textbox(page, "goal").fill(GOAL)
    page.locator("#send").click()
    chat = page.locator("#chatbot")
    expect(chat).to_contain_text(GOAL)
    expect(chat).to_contain_text("Tool: run_batch", timeout=WORKFLOW_TIMEOUT_MS)
    _expect_preview_loaded(page, "chat")
    card = page.locator("#chat-card")
    expect(card).to_contain_text(f"ImagingStudy/{seeded.imaging_study_id}")
    expect(card).to_contain_text("Left lung")
    expect(card).to_contain_text("Right lung")
    for modality in ("RTSTRUCT", "SEG", "SR"):
        expect(page.locator("#chat-card-writes")).to_contain_text(modality)
    expect(page.locator("#chat-card-writes")).to_contain_text("DiagnosticReport")
    expect(chat).to_contain_text("waiting for approval")
    save_screenshot(page, artifacts, f"{shot}approval.png")

    # A rejection without a reason is refused with a message, and decides nothing.
    _textbox(page, "chat-reviewer").fill(reviewer)
    page.locator("#chat-reject").click()
    expect(page.locator("#chat-notice")).to_contain_text("A rejection needs a reason")
    expect(card).to_be_visible()
    assert_nothing_written(settings, seeded)

    page.locator("#chat-approve").click()
    expect(chat).to_contain_text(
        re.compile(rf"ImagingStudy/{seeded.imaging_study_id}: completed"), timeout=WORKFLOW_TIMEOUT_MS
    )
    expect(card).to_be_hidden()
    save_screenshot(page, artifacts, f"{shot}completed.png")

    # The jobs tab shows the same outcome, read from the durable store.
    page.get_by_role("tab", name="Jobs").click()
    page.locator("#jobs-refresh").click()
    expect(page.locator("#jobs")).to_contain_text(seeded.imaging_study_id)
    expect(page.locator("#jobs")).to_contain_text("completed")


def _assert_approved_once_by(settings: Settings, seeded: SeededStudy, reviewer_id: str, reviewer: str) -> None:
    written = assert_written_once(settings, seeded)
    with fhir_client(settings) as fhir:
        [practitioner] = fhir.search("Practitioner", {"identifier": f"{REVIEWER_ID_SYSTEM}|{reviewer_id}"})
    assert practitioner.name[0].text == reviewer
    assert any(a.who.reference == f"Practitioner/{practitioner.id}" for a in written.provenance.agent)


def _run_goal(
    private_services: Settings, page: Page, artifacts: Path, tmp_path: Path, model: BaseChatModel | None,
    seed: int, shot: str,
) -> None:
    # The header names the configured planner (offline here); `model` replaces it in the chat when given.
    settings = clean_run_dir(private_services, f"goal-{seed}").model_copy(update={"llm_provider": "offline"})
    seeded = seed_phantom(settings, tmp_path / f"UI-{seed:04d}", phantom_spec(seed, f"UI-{seed:04d}"))
    try:
        with served_app(settings, model) as url:
            _goal_to_completion(page, url, settings, seeded, artifacts, shot, "Dr. Browser")
    finally:
        retire(settings, [seeded])  # if the test failed half-way, keep the study off the next test's work list
    _assert_approved_once_by(settings, seeded, "dr-browser", "Dr. Browser")


def test_example_goal_with_scripted_model_approve_and_completed(
    private_services: Settings, page: Page, artifacts: Path, tmp_path: Path
) -> None:
    model = ScriptedModel(script=[AIMessage("", tool_calls=[tool_call("run_batch")])])
    _run_goal(private_services, page, artifacts, tmp_path, model, 301, shot="")


def test_example_goal_with_default_offline_planner(
    private_services: Settings, page: Page, artifacts: Path, tmp_path: Path
) -> None:
    _run_goal(private_services, page, artifacts, tmp_path, None, 303, shot="offline-")


def test_approvals_tab_answers_a_job_started_outside_the_app(
    private_services: Settings, page: Page, artifacts: Path, tmp_path: Path
) -> None:
    settings = clean_run_dir(private_services, "panel")
    seeded = seed_phantom(settings, tmp_path / "UI-0302", phantom_spec(302, "UI-0302"))
    try:
        with served_app(settings, ScriptedModel(script=[])) as url, AgentRuntime(settings) as cli:
            # Started like `imaging-agent run` does: another connection to the same durable store.
            started = cli.start_study(seeded.imaging_study_id)
            [pending] = started.pending

            page.goto(url, wait_until="load")
            page.get_by_role("tab", name="Approvals").click()
            page.locator("#approvals-refresh").click()
            page.locator("#pending-list").locator("input").click()
            page.get_by_role("option", name=re.compile(re.escape(seeded.imaging_study_id))).click()
            _expect_preview_loaded(page, "panel")
            expect(page.locator("#panel-card")).to_contain_text(pending.thread_id)
            expect(page.locator("#panel-card-findings")).to_contain_text("Left lung")
            save_screenshot(page, artifacts, "panel-approval.png")

            _textbox(page, "panel-reviewer").fill("Dr. Panel")
            page.locator("#panel-reject").click()
            expect(page.locator("#panel-notice")).to_contain_text("A rejection needs a reason")
            assert cli.report(started.thread_id).pending, "a reject without reason must decide nothing"

            _textbox(page, "panel-reason").fill("right lung misses the costophrenic angle")
            page.locator("#panel-reject").click()
            expect(page.locator("#panel-notice")).to_contain_text(
                f"ImagingStudy/{seeded.imaging_study_id}: rejected", timeout=WORKFLOW_TIMEOUT_MS
            )
            expect(page.locator("#panel-card")).to_be_hidden()
            save_screenshot(page, artifacts, "panel-rejected.png")

            # The decision made in the app is what the CLI's runtime sees.
            report = cli.report(started.thread_id)
            assert report.done and [o["outcome"] for o in report.outcomes] == ["rejected"]
            assert cli.pending_approvals() == []
        assert_nothing_written(settings, seeded)
    finally:
        retire(settings, [seeded])
