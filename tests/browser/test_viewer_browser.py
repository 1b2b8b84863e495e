"""The reviewer's viewer in headless Debian Chromium, read pixel by pixel from the PNG the page shows.

A phantom contoured offline by `imaging-agent contour` is shown by `imaging-agent view`'s page
(read-only): each plane is scrolled to a given index and the image the browser holds is checked
against the masks (outlines on the masks' borders, and the very image the renderer makes), and
a key press moves the plane. The editable viewer of the approval card, over the same series and
the phantom's masks in the work store, turns a click and an "erase range" into exactly the
expected edit list and shows the edited overlay. No PACS or FHIR is needed for either: the card's
decisions are checked, with the services, in test_app_browser.py.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect
from typer.testing import CliRunner

from agent.cli import app
from agent.services.process import free_port
from agent.settings import get_settings
from agent.ui.cards import open_review_files
from agent.ui.folder_viewer import THEME, build_folder_viewer, folder_source, open_folder
from agent.ui.viewer import Viewer
from tests.browser.conftest import HOST, save_screenshot
from tests.viewer_checks import assert_outline_matches, colour_mask
from tools.imaging.volume import assemble_volume, read_series_dir
from tools.imaging.volume_store import save_volume
from tools.phantom import PhantomSpec, make_phantom, write_phantom
from tools.review.edits import BrushStroke, EditList, EraseRange, apply_edits
from tools.review.scene import Scene, SceneCache
from tools.review.slice_view import WINDOW_PRESETS
from tools.segmentation.base import STRUCTURES, SegmentationResult, StructureMask
from tools.segmentation.result_store import save_result
from tools.workflow.approval import ReviewFiles

pytestmark = [pytest.mark.browser]

SPEC = PhantomSpec(slices=40, rows=256, columns=256, pixel_spacing_mm=1.4, slice_thickness_mm=5.0, seed=7)
LUNG = WINDOW_PRESETS["lung"]
SMALL_SCREEN = {"width": 1366, "height": 768}


@dataclass
class Contoured:
    ct: Path
    out: Path
    files: ReviewFiles


@pytest.fixture(scope="module")
def contoured(tmp_path_factory: pytest.TempPathFactory) -> Contoured:
    """The phantom's series, its offline `contour` folder, and its exact lungs in a work store."""
    root = tmp_path_factory.mktemp("viewer")
    phantom = make_phantom(SPEC)
    write_phantom(phantom, root / "ct")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGING_AGENT_DEFAULT_ENGINE", "lung-threshold")
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["contour", str(root / "ct"), "-o", str(root / "out")])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    volume = assemble_volume(read_series_dir(root / "ct"))
    masks = SegmentationResult(
        "lung-threshold", "1.0.0",
        [StructureMask(STRUCTURES["left-lung"], phantom.left_lung, 1.0),
         StructureMask(STRUCTURES["right-lung"], phantom.right_lung, 1.0)],
    )
    files = ReviewFiles(
        volume_path=str(root / "volume.npz"), volume_sha256=save_volume(volume, root / "volume.npz"),
        masks_path=str(root / "masks.npz"), masks_sha256=save_result(masks, root / "masks.npz"),
    )
    return Contoured(root / "ct", root / "out", files)


@contextmanager
def served(demo: gr.Blocks) -> Iterator[str]:
    port = free_port()
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=HOST, server_port=port, prevent_thread_lock=True, theme=THEME, footer_links=[],
        show_error=False, quiet=True,
    )
    try:
        yield f"http://{HOST}:{port}/"
    finally:
        demo.close()


def editable_page(files: ReviewFiles) -> gr.Blocks:
    """The approval card's viewer (editable) on its own, over the card's `ReviewFiles`."""
    with gr.Blocks(analytics_enabled=False) as demo:
        with gr.Column(elem_classes=["review-card"]):
            viewer = Viewer("edit", SceneCache(open_review_files), editable=True)
        demo.load(lambda: files.model_dump(), outputs=viewer.source)
    return demo


def shown(page: Page, url: str, prefix: str, before: str | None = None) -> tuple[str, np.ndarray]:
    """The image the page shows now (once it differs from ``before``): its src and RGB pixels."""
    image = page.locator(f"#{prefix}-viewer-image img")
    expect(image).to_be_visible()
    if before is not None:
        expect(image).not_to_have_attribute("src", before)
    image.scroll_into_view_if_needed()
    # Drawn, not only fetched: the screenshots show the image.
    # Asked of the element on the page each time: Gradio may swap the <img> for a new one meanwhile.
    page.wait_for_function(
        "sel => { const img = document.querySelector(sel); return img && img.complete && img.naturalWidth > 0; }",
        arg=f"#{prefix}-viewer-image img",
    )
    src = str(image.get_attribute("src"))
    body = page.request.get(src if src.startswith("http") else url.rstrip("/") + "/" + src.lstrip("/")).body()
    return src, np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def slider_value(page: Page, prefix: str) -> int:
    return int(page.locator(f"#{prefix}-viewer-index input[type=number]").input_value())


def go_to(page: Page, prefix: str, index: int) -> None:
    box = page.locator(f"#{prefix}-viewer-index input[type=number]")
    box.fill(str(index))
    box.press("Tab")  # the box answers when it loses the focus


def choose_plane(page: Page, prefix: str, plane: str) -> None:
    page.locator(f"#{prefix}-viewer-plane").get_by_text(plane, exact=True).click()


def assert_shows(image: np.ndarray, scene: Scene, plane: str, index: int, edits: list = ()) -> None:  # type: ignore[assignment]
    """The page's image is the renderer's, and each structure's outline lies on its (edited) mask."""
    expected = np.asarray(scene.render(plane, index, LUNG, scene.keys, edits).convert("RGB"))
    assert image.shape == expected.shape and np.array_equal(image, expected), f"{plane} {index}: not the expected image"
    masks = {spec.key: mask for spec, mask in scene.structures}
    if edits:
        masks = apply_edits(masks, scene.geometry, edits, scene.series_uid)
    mapping = scene.renderer.mapping(plane)
    for spec, _ in scene.structures:
        cut = scene.renderer.plane(masks[spec.key], plane, index)
        if cut.any():
            assert_outline_matches(image, cut, mapping, spec.color_rgb)
        else:
            assert not colour_mask(image, spec.color_rgb, mapping).any()


def test_view_scrolls_each_plane_and_keys_move_the_plane(page: Page, artifacts: Path, contoured: Contoured) -> None:
    source = folder_source(contoured.out, None)
    scene = open_folder(source)
    summary = json.loads((contoured.out / "summary.json").read_text())
    assert summary["source_dir"] == str(contoured.ct.resolve())
    page.set_viewport_size(SMALL_SCREEN)
    with served(build_folder_viewer(source, SceneCache(open_folder))) as url:
        page.goto(url, wait_until="load")
        src, image = shown(page, url, "view")
        assert_shows(image, scene, "axial", scene.renderer.count("axial") // 2)
        for element in ("view-viewer-image", "view-viewer-plane", "view-viewer-index", "view-viewer-window"):
            box = page.locator(f"#{element}").bounding_box()
            assert box is not None and box["x"] + box["width"] <= SMALL_SCREEN["width"], f"{element} is off a 1366 px screen"
        image_box = page.locator("#view-viewer-image").bounding_box()
        assert image_box is not None and image_box["y"] + image_box["height"] <= SMALL_SCREEN["height"]
        save_screenshot(page, artifacts, "viewer-axial.png")

        for plane, fraction in (("axial", 0.3), ("coronal", 0.45), ("sagittal", 0.3)):
            if plane != "axial":
                choose_plane(page, "view", plane)
                src, image = shown(page, url, "view", src)
            index = round(fraction * (scene.renderer.count(plane) - 1))
            go_to(page, "view", index)
            src, image = shown(page, url, "view", src)
            assert_shows(image, scene, plane, index)
            save_screenshot(page, artifacts, f"viewer-{plane}-{index}.png")

        # Keys: j (or ↓) shows the next plane, k (or ↑) the previous one, wherever the focus is not a text box.
        page.locator("#view-viewer-keys").click()
        page.keyboard.press("j")
        src, image = shown(page, url, "view", src)
        assert slider_value(page, "view") == index + 1
        assert_shows(image, scene, "sagittal", index + 1)
        page.keyboard.press("ArrowUp")
        src, image = shown(page, url, "view", src)
        assert slider_value(page, "view") == index
        assert_shows(image, scene, "sagittal", index)

        # A QA flag's planes are one choice away.
        flagged = next(f for f in scene.flags if f.planes is not None)
        plane, target = scene.flag_target(flagged)  # type: ignore[misc]
        page.locator("#view-viewer-flag").locator("input").click()
        page.get_by_role("option", name=f"{flagged.severity}: {flagged.message}"[:40], exact=False).first.click()
        src, image = shown(page, url, "view", src)
        assert slider_value(page, "view") == target
        assert_shows(image, scene, plane, target)
        save_screenshot(page, artifacts, "viewer-flag.png")
        expect(page.locator("#view-viewer-editing")).to_have_count(0)  # read-only: no editing


def click_on_image(page: Page, prefix: str, x: float, y: float) -> tuple[int, int]:
    """Click at natural pixel (x, y) of the shown image; returns the pixel Gradio reports for that click.

    The image is scaled to fit its box: Gradio rounds the click back to natural pixels, and that
    pixel (read here with Gradio's own formula) is what the viewer maps to voxels."""
    image = page.locator(f"#{prefix}-viewer-image img")
    geometry = image.evaluate(
        """img => {
            const n = img.getBoundingClientRect();
            const r = Math.min(n.width / img.naturalWidth, n.height / img.naturalHeight, 1);
            return {left: n.left + (n.width - img.naturalWidth * r) / 2, top: n.top + (n.height - img.naturalHeight * r) / 2, r};
        }"""
    )
    image.evaluate(
        """img => img.parentElement.closest('button, div').addEventListener('click', (e) => {
            const n = img.getBoundingClientRect();
            const r = Math.min(n.width / img.naturalWidth, n.height / img.naturalHeight, 1);
            const ox = (n.width - img.naturalWidth * r) / 2, oy = (n.height - img.naturalHeight * r) / 2;
            window.viewerClick = [Math.round((e.clientX - n.left - ox) / r), Math.round((e.clientY - n.top - oy) / r)];
        }, {capture: true, once: true})"""
    )
    page.mouse.click(geometry["left"] + x * geometry["r"], geometry["top"] + y * geometry["r"])
    clicked = page.evaluate("window.viewerClick")
    return int(clicked[0]), int(clicked[1])


def edit_list(page: Page) -> list:
    text = page.locator("#edit-edit-list textarea").input_value()
    return EditList.validate_json(text) if text else []


def test_brush_and_erase_range_make_the_expected_edits_and_overlay(
    page: Page, artifacts: Path, contoured: Contoured
) -> None:
    scene = open_review_files(contoured.files.model_dump())
    left = next(mask for spec, mask in scene.structures if spec.key == "left-lung")
    page.set_viewport_size(SMALL_SCREEN)
    with served(editable_page(contoured.files)) as url:
        page.goto(url, wait_until="load")
        src, image = shown(page, url, "edit")
        index = scene.renderer.count("axial") // 2
        assert_shows(image, scene, "axial", index)
        page.locator("#edit-viewer-editing").get_by_text("Correct a contour").click()

        # Erase with a 5 mm brush at the middle of the left lung on this plane.
        rows, columns = np.nonzero(scene.renderer.plane(left, "axial", index))
        mapping = scene.renderer.mapping("axial")
        x, y = mapping.display_at(float(np.median(rows)), float(np.median(columns)))
        clicked = click_on_image(page, "edit", x, y)
        expect(page.locator("#edit-edit-list textarea")).not_to_have_value("")
        stroke = BrushStroke(
            structure="left-lung", mode="erase", plane="axial", index=index,
            points=[mapping.voxel_at(*clicked)], radius_mm=5.0,
        )
        assert edit_list(page) == [stroke]
        src, image = shown(page, url, "edit", src)
        assert_shows(image, scene, "axial", index, [stroke])
        save_screenshot(page, artifacts, "viewer-brush-erase.png")

        # Erase the left lung from the plane before to the plane after: gone there, kept elsewhere.
        erase = EraseRange(structure="left-lung", plane="axial", first=index - 1, last=index + 1)
        for box, value in (("first", index - 1), ("last", index + 1)):
            page.locator(f"#edit-edit-{box} input").fill(str(value))
        page.locator("#edit-edit-erase").click()
        expect(page.locator("#edit-edit-list textarea")).to_have_value(re.compile("erase-range"))
        assert edit_list(page) == [stroke, erase]
        src, image = shown(page, url, "edit", src)
        assert_shows(image, scene, "axial", index, [stroke, erase])
        assert not colour_mask(image, STRUCTURES["left-lung"].color_rgb, mapping).any()
        page.locator("#edit-viewer-keys").click()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")
        expect(page.locator("#edit-viewer-index input[type=number]")).to_have_value(str(index + 2))
        src, image = shown(page, url, "edit", src)
        assert_shows(image, scene, "axial", index + 2, [stroke, erase])
        assert colour_mask(image, STRUCTURES["left-lung"].color_rgb, mapping).any()
        save_screenshot(page, artifacts, "viewer-erase-range.png")

        page.locator("#edit-edit-undo").click()
        expect(page.locator("#edit-edit-list textarea")).not_to_have_value(re.compile("erase-range"))
        assert edit_list(page) == [stroke]
        save_screenshot(page, artifacts, "viewer-undo.png")
