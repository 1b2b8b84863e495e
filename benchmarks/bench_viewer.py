"""The reviewer's viewer: how long a slice change takes, and what an edit costs, on a real chest CT.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_viewer.py [--dicom DIR] [--changes N] [--no-browser]

The series (default ../shared/data/lidc-idri-0001/dicom) is segmented by lung-threshold and put in
a work store as an approval card names it (`ReviewFiles`). Then:

1. opening the card's scene (loading the volume and masks, hashes checked): once per card;
2. per plane, ``--changes`` slice changes, each timed as (a) rendering the plane
   (tools/review/slice_view.py), (b) that plus what Gradio does with the image before it
   answers (PNG encoding into its cache, `gr.Image.postprocess`);
3. in headless Chromium (Debian's, as the browser tests use), on the card's viewer served on
   127.0.0.1: from a key press (j: next plane) until the new image has loaded in the page, the
   time a reviewer waits — the whole round trip;
4. an edit: applying a 10 mm brush stroke and an erase range to the masks (what the overlay
   of an edited result costs);
5. what saving an edit costs the job before the corrected card is shown: the workflow's edit step
   (tools/workflow/edit.py: masks loaded and hash-checked, edits applied, measured, QA-checked and
   stored) and the rebuild of RTSTRUCT, SEG, SR, previews and report with their sha256
   (build_package, as the build step runs it).

Medians and 90th percentiles are printed and written to benchmarks/results/viewer.md
(git-ignored). The target is <= 150 ms per slice change; nothing here is asserted in a test.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DICOM = PROJECT_ROOT.parent / "shared" / "data" / "lidc-idri-0001" / "dicom"
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
CHROMIUM = Path("/usr/bin/chromium")


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return f"{statistics.median(ms):.0f} | {p90:.0f} | {max(ms):.0f}"


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def browser_changes(files: object, changes: int) -> list[float]:
    """Key press to loaded image, in Chromium, ``changes`` times (axial, from the middle down)."""
    import gradio as gr
    from playwright.sync_api import sync_playwright

    from agent.services.process import free_port
    from agent.ui.cards import open_review_files
    from agent.ui.folder_viewer import THEME
    from agent.ui.viewer import Viewer
    from tools.review.scene import SceneCache

    with gr.Blocks(analytics_enabled=False) as demo:
        with gr.Column(elem_classes=["review-card"]):
            viewer = Viewer("bench", SceneCache(open_review_files), editable=True)
        demo.load(lambda: files.model_dump(), outputs=viewer.source)  # type: ignore[attr-defined]
    port = free_port()
    demo.queue()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, theme=THEME, quiet=True)
    samples: list[float] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            image = page.locator("#bench-viewer-image img")
            image.wait_for(timeout=120_000)
            page.locator("#bench-viewer-keys").click()
            for _ in range(changes):
                before = image.get_attribute("src")
                started = time.perf_counter()
                page.keyboard.press("j")
                page.wait_for_function(
                    "([sel, before]) => { const i = document.querySelector(sel);"
                    " return i && i.getAttribute('src') !== before && i.complete && i.naturalWidth > 0; }",
                    arg=["#bench-viewer-image img", before], timeout=30_000,
                )
                samples.append(time.perf_counter() - started)
            browser.close()
    finally:
        demo.close()
    return samples


def edit_cost(files: object, volume: object, source: list[object], edit: object, work: Path) -> list[str]:
    """The edit step and the rebuild after a reviewer saves `edit`, timed as the job runs them."""
    from datetime import UTC

    from tools.identity.principal import Principal
    from tools.results.package import build_package
    from tools.segmentation.result_store import load_result
    from tools.workflow.approval import ApprovalDecision, ApprovalRequest
    from tools.workflow.edit import apply_review_edits
    from tools.workflow.records import StoredFile, StoredSegmentation

    editor = Principal(
        id="bench", display_name="Bench", issuer="urn:bench", roles=frozenset({"radiologist"}),
        auth_time=datetime.now(UTC), auth_method="password",
    )
    decision = ApprovalDecision.by(editor, "modify", edits=[edit])
    # Only the result UID and the files are read from the card by the edit step.
    request = ApprovalRequest.model_construct(request_id="2.25.1", review_files=files)
    volume_file = StoredFile(path=Path(files.volume_path), sha256=files.volume_sha256)
    masks = StoredSegmentation(path=Path(files.masks_path), sha256=files.masks_sha256)
    started = time.perf_counter()
    edited = apply_review_edits(volume_file, masks, request, decision)
    edit_s = time.perf_counter() - started
    started = time.perf_counter()
    package = build_package(source, volume, load_result(edited.path, edited.sha256), work / "edited")
    build_s = time.perf_counter() - started
    return [
        "Saving an edit (one erase range), until the corrected card is ready: edit step (load, apply, measure, QA, "
        f"store) {edit_s * 1000:.0f} ms; rebuild of {len(package.objects)} DICOM objects, previews and report with "
        f"their sha256 {build_s * 1000:.0f} ms; total {(edit_s + build_s) * 1000:.0f} ms.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dicom", type=Path, default=DEFAULT_DICOM)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    if not args.dicom.is_dir():
        sys.exit(f"{args.dicom} is not a folder: give a CT series with --dicom DIR")

    import gradio as gr

    from agent.ui.cards import open_review_files
    from tools.imaging.volume import assemble_volume, read_series_dir
    from tools.imaging.volume_store import save_volume
    from tools.review.edits import BrushStroke, EraseRange, apply_edits
    from tools.review.slice_view import PLANES, WINDOW_PRESETS
    from tools.segmentation.lung_threshold import LungThresholdEngine
    from tools.segmentation.result_store import save_result
    from tools.workflow.approval import ReviewFiles

    volume = assemble_volume(read_series_dir(args.dicom))
    result = LungThresholdEngine().segment(volume, ["lungs"])
    work = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    files = ReviewFiles(
        volume_path=str(work / "volume.npz"), volume_sha256=save_volume(volume, work / "volume.npz"),
        masks_path=str(work / "masks.npz"), masks_sha256=save_result(result, work / "masks.npz"),
    )
    started = time.perf_counter()
    scene = open_review_files(files.model_dump())
    open_s = time.perf_counter() - started

    lung = WINDOW_PRESETS["lung"]
    component = gr.Image(type="pil", format="png", render=False)
    lines = [
        f"# Viewer — {datetime.now():%Y-%m-%d %H:%M}, {platform.node()}, {args.dicom}",
        "",
        f"Series {volume.array.shape} voxels, spacing {volume.geometry.spacing} mm; opening the card's scene "
        f"(volume + masks loaded, hashes checked): {open_s * 1000:.0f} ms.",
        "",
        f"Slice changes ({args.changes} per plane), ms: median | p90 | max",
        "",
        "| plane | image (px) | render | render + Gradio's PNG |",
        "|---|---|---|---|",
    ]
    for plane in PLANES:
        count = scene.renderer.count(plane)
        indices = [round(count * (0.2 + 0.6 * k / max(1, args.changes - 1))) for k in range(args.changes)]
        scene.render(plane, indices[0], lung, scene.keys)  # first touch of the plane's memory
        render = [timed(lambda i=i: scene.render(plane, i, lung, scene.keys)) for i in indices]
        served = [timed(lambda i=i: component.postprocess(scene.render(plane, i, lung, scene.keys))) for i in indices]
        mapping = scene.renderer.mapping(plane)
        lines.append(f"| {plane} | {mapping.width} x {mapping.height} | {summary(render)} | {summary(served)} |")

    index = scene.renderer.count("axial") // 2
    stroke = BrushStroke(
        structure="left-lung", mode="erase", plane="axial", index=index, points=[(250.0, 350.0)], radius_mm=10.0
    )
    erase = EraseRange(structure="left-lung", plane="axial", first=index, last=scene.renderer.count("axial") - 1)
    masks = {spec.key: mask for spec, mask in scene.structures}
    edit_s = [timed(lambda e=e: apply_edits(masks, scene.geometry, [e], scene.series_uid)) for e in (stroke, erase) * 3]
    lines += [
        "",
        f"Applying an edit to the masks (all {len(masks)} copied, then edited), ms: median | p90 | max: "
        f"{summary(edit_s)}",
    ]
    lines += ["", *edit_cost(files, volume, read_series_dir(args.dicom), erase, work)]
    if not args.no_browser and CHROMIUM.exists():
        round_trip = browser_changes(files, args.changes)
        lines += [
            "",
            f"Chromium, key press to the next axial plane's image loaded (served on 127.0.0.1), ms: "
            f"median | p90 | max: {summary(round_trip)}",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "viewer.md").write_text(text)


if __name__ == "__main__":
    main()
