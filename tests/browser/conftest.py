"""Browser-tier fixtures: Debian's Chromium driven by Playwright, private services, a served app.

Never a downloaded browser: /usr/bin/chromium with the flags it needs as root and offline
(see docs/architecture.md, tests). Screenshots go to tests/browser/artifacts/ (git-ignored).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import pytest
from langchain_core.language_models import BaseChatModel
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from agent import services
from agent.runtime import AgentRuntime
from agent.settings import Settings
from agent.ui.layout import build_app
from tests.conftest import free_port, make_service_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def private_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """An Orthanc and a FHIR server of this module's own, stopped afterwards."""
    settings = make_service_settings(tmp_path_factory.mktemp("browser-services"))
    try:
        services.up(settings)
    except services.ServiceError as exc:
        services.down(settings)
        pytest.fail(f"could not start the browser tests' services: {exc}")
    yield settings
    services.down(settings)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's `chromium` package (never a downloaded browser)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


# Playwright's assertions wait 5 s by default; on a loaded 2-core machine a Gradio round trip can
# take longer (the full suite saw a viewer update miss it). The same patience as the page's actions.
expect.set_options(timeout=30_000)


@pytest.fixture()
def page(browser_context: BrowserContext) -> Iterator[Page]:
    page = browser_context.new_page()
    page.set_default_timeout(30_000)
    yield page
    page.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@contextmanager
def served_app(settings: Settings, model: BaseChatModel | None) -> Iterator[str]:
    """The bare Blocks (no sign-in, so every decision is refused) on a free 127.0.0.1 port; yields its URL.

    Only tests serve it so: `imaging-agent ui` serves it behind the service's sign-in."""
    with AgentRuntime(settings) as runtime:
        demo = build_app(settings, runtime, model)
        port = free_port()
        demo.queue(default_concurrency_limit=4)
        # No web fonts: the test machine is offline.
        theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])
        demo.launch(
            server_name=HOST, server_port=port, prevent_thread_lock=True, theme=theme, footer_links=[],
            show_error=False, quiet=True,
        )
        try:
            yield f"http://{HOST}:{port}/"
        finally:
            demo.close()


def save_screenshot(page: Page, artifacts: Path, name: str) -> Path:
    path = artifacts / name
    page.screenshot(path=str(path), full_page=True)
    return path


def clean_run_dir(settings: Settings, name: str) -> Settings:
    """A fresh run directory per test (its own checkpoints and work files), same services."""
    run_dir = settings.run_dir / name
    shutil.rmtree(run_dir, ignore_errors=True)
    return settings.model_copy(update={"run_dir": run_dir})
