"""The Gradio app in headless Debian Chromium: the example goal, the approval card, and its decision.

Private Orthanc + FHIR server, one small phantom per test, the app served in this process.
The first test drives the chat with a scripted model that calls `run_batch` (independent of the
planner); the second uses the default planner (the offline intent planner); the third shows, in
the Approvals tab, a job started outside the app (as the CLI does: one durable store).

The app has no sign-in of its own yet (issue 10): nothing typed into the page may name the
reviewer, so Approve and Reject refuse with "sign in through imaging-agent serve" and nothing is
written. The decision is then made as a signed-in principal through the runtime, as the API does.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from PIL import Image
from playwright.sync_api import Locator, Page, expect

from agent.parts import fhir_client
from agent.runtime import AgentRuntime
from agent.settings import Settings
from agent.ui.cards import open_review_files
from tests.browser.conftest import clean_run_dir, save_screenshot, served_app
from tests.identities import TEST_ISSUER, signed_decision
from tests.integration.workflow_helpers import (
    SeededStudy,
    assert_nothing_written,
    assert_written_once,
    phantom_spec,
    retire,
    seed_phantom,
)
from tests.scripted_model import ScriptedModel, tool_call
from tests.viewer_checks import assert_outline_matches
from tools.review.slice_view import WINDOW_PRESETS
from tools.workflow.approval import ReviewFiles

pytestmark = [pytest.mark.browser, pytest.mark.integration]

GOAL = "analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS"
WORKFLOW_TIMEOUT_MS = 240_000


def _textbox(page: Page, elem_id: str) -> Locator:
    return page.locator(f"#{elem_id}").locator("textarea, input").first


def _expect_preview_loaded(page: Page, prefix: str) -> None:
    preview = page.locator(f"#{prefix}-card-previews img").first
    expect(preview).to_be_visible(timeout=WORKFLOW_TIMEOUT_MS)
    preview.scroll_into_view_if_needed()  # under the viewer: a lazy image loads once it is scrolled to
    expect(preview).to_have_js_property("complete", True)
    assert preview.evaluate("img => img.naturalWidth") > 0, "the preview PNG did not load"


def _expect_viewer_shows_the_cards_masks(page: Page, files: ReviewFiles | None) -> None:
    """The card's viewer shows the middle axial plane of the volume and masks the request names."""
    assert files is not None, "the approval request names no volume and masks for the viewer"
    scene = open_review_files(files.model_dump())
    index = scene.renderer.count("axial") // 2
    image = page.locator("#panel-viewer-image img")
    expect(image).to_be_visible(timeout=WORKFLOW_TIMEOUT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    src = str(image.get_attribute("src"))
    shown = np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))
    expected = np.asarray(scene.render("axial", index, WINDOW_PRESETS["lung"], scene.keys).convert("RGB"))
    assert np.array_equal(shown, expected), "the card's viewer does not show the middle axial plane of its masks"
    for spec, mask in scene.structures:
        cut = scene.renderer.plane(mask, "axial", index)
        if cut.any():
            assert_outline_matches(shown, cut, scene.renderer.mapping("axial"), spec.color_rgb)


def _goal_to_card(page: Page, url: str, settings: Settings, seeded: SeededStudy, artifacts: Path, shot: str) -> None:
    """Type the example goal, check the approval card, and see Approve refused without a sign-in."""
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

    # Without a signed-in principal the page decides nothing, whatever it sends.
    page.locator("#chat-approve").click()
    expect(page.locator("#chat-notice")).to_contain_text("imaging-agent serve")
    expect(card).to_be_visible()
    _textbox(page, "chat-reason").fill("wrong side")
    page.locator("#chat-reject").click()
    expect(page.locator("#chat-notice")).to_contain_text("not signed in")
    expect(card).to_be_visible()
    assert_nothing_written(settings, seeded)


def _approve_as_principal(settings: Settings, reviewer_id: str, reviewer: str) -> None:
    """Approve what waits, as a signed-in principal, through the durable store (as the API does)."""
    with AgentRuntime(settings) as runtime:
        for pending in runtime.pending_approvals():
            runtime.decide(pending.thread_id, {pending.interrupt_id: signed_decision("approve", reviewer_id, reviewer)})


def _assert_approved_once_by(settings: Settings, seeded: SeededStudy, reviewer_id: str, reviewer: str) -> None:
    written = assert_written_once(settings, seeded)
    with fhir_client(settings) as fhir:
        [practitioner] = fhir.search("Practitioner", {"identifier": f"{TEST_ISSUER}|{reviewer_id}"})
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
            _goal_to_card(page, url, settings, seeded, artifacts, shot)
        _approve_as_principal(settings, "dr-browser", "Dr. Browser")
    finally:
        retire(settings, [seeded])  # if the test failed half-way, keep the study off the next test's work list
    _assert_approved_once_by(settings, seeded, "dr-browser", "Dr. Browser")


def test_example_goal_with_scripted_model_card_refuses_unsigned_approval(
    private_services: Settings, page: Page, artifacts: Path, tmp_path: Path
) -> None:
    model = ScriptedModel(script=[AIMessage("", tool_calls=[tool_call("run_batch")])])
    _run_goal(private_services, page, artifacts, tmp_path, model, 301, shot="")


def test_example_goal_with_default_offline_planner(
    private_services: Settings, page: Page, artifacts: Path, tmp_path: Path
) -> None:
    _run_goal(private_services, page, artifacts, tmp_path, None, 303, shot="offline-")


def test_approvals_tab_shows_a_job_started_outside_the_app_and_refuses_unsigned_decisions(
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
            _expect_viewer_shows_the_cards_masks(page, pending.request.review_files)
            save_screenshot(page, artifacts, "panel-approval.png")

            # Saving edits is a decision too: refused without a signed-in principal, like the others.
            page.locator("#panel-save-edits").click()
            expect(page.locator("#panel-notice")).to_contain_text("not signed in")

            _textbox(page, "panel-reason").fill("right lung misses the costophrenic angle")
            page.locator("#panel-reject").click()
            expect(page.locator("#panel-notice")).to_contain_text("imaging-agent serve")
            page.locator("#panel-approve").click()
            expect(page.locator("#panel-notice")).to_contain_text("not signed in")
            expect(page.locator("#panel-card")).to_be_visible()
            save_screenshot(page, artifacts, "panel-refused.png")
            assert cli.report(started.thread_id).pending, "the page must decide nothing without a signed-in principal"
            decision = signed_decision("reject", "dr-panel", "Dr. Panel", "right lung misses the costophrenic angle")
            report = cli.decide(started.thread_id, {pending.interrupt_id: decision})
            assert report.done and [o["outcome"] for o in report.outcomes] == ["rejected"]
        assert_nothing_written(settings, seeded)
    finally:
        retire(settings, [seeded])
