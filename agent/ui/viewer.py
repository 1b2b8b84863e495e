"""The full-series viewer: every plane of the CT under review with its contours, and the reviewer's edits.

Used by the approval cards (the volume and masks behind the card, `ReviewFiles`) and by
`imaging-agent view` (an offline `contour` folder, read-only). Planes are rendered on demand by
tools/review/slice_view.py from the scene kept in memory (tools/review/scene.py), so a slice
change reads one plane; benchmarks/bench_viewer.py measures it.

Editing: a click on the image paints or erases a disk of the brush size around that point in the
shown plane, "Erase from plane A to B" removes a structure from a range of planes, Undo drops
the last edit. The edits are data (tools/review/edits.py), in the plane's voxel coordinates:
`DisplayMapping` maps the clicked display pixel back through the aspect-ratio resampling. The
overlay shows the masks with the edits applied; the card sends the list with "Save edits for
approval" (action "modify"), never a mask.

Keys (when no text box has focus): ↓ / j / PageDown next plane, ↑ / k / PageUp previous,
a approve, r reject (first to the reason box while it is empty).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from pydantic import ValidationError

from tools.review.edits import BrushStroke, EditError, EditList, EraseRange, MaskEdit, Plane
from tools.review.scene import Scene, SceneCache, SceneError
from tools.review.slice_view import PLANES, WINDOW_PRESETS, Window

log = logging.getLogger(__name__)

CUSTOM_WINDOW = "custom"
DEFAULT_WINDOW = "lung"
DEFAULT_BRUSH_MM = 5.0
IMAGE_HEIGHT_PX = 470
"""Fits a 1366 x 768 screen with the controls beside it."""
KEYS_HELP = (
    "Keys: <kbd>↓</kbd>/<kbd>j</kbd> next plane · <kbd>↑</kbd>/<kbd>k</kbd> previous · "
    "<kbd>a</kbd> approve · <kbd>r</kbd> reject"
)
# One listener for the page, whichever card is on screen (the tab shown): the viewer's
# buttons and the card's decision buttons are found by class inside the visible card.
KEYS_JS = """
if (!window.imagingAgentKeys) {
  window.imagingAgentKeys = true;
  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    const typing = 'textarea, select, [contenteditable="true"], input:not([type=radio]):not([type=checkbox])';
    if (target instanceof Element && target.closest(typing)) return;
    const card = [...document.querySelectorAll('.review-card')].find((c) => c.offsetParent !== null);
    if (!card) return;
    const press = (name) => {
      const button = card.querySelector('button.' + name);
      if (button) { event.preventDefault(); button.click(); }
    };
    if (['ArrowDown', 'PageDown', 'j'].includes(event.key)) press('viewer-next');
    else if (['ArrowUp', 'PageUp', 'k'].includes(event.key)) press('viewer-prev');
    else if (event.key === 'a') press('card-approve');
    else if (event.key === 'r') {
      const reason = card.querySelector('.card-reason textarea, .card-reason input');
      if (reason && !reason.value.trim()) { event.preventDefault(); reason.focus(); }
      else press('card-reject');
    }
  });
}
"""

Source = dict[str, Any]
"""What a scene is opened from (the card's `ReviewFiles`, or an offline folder), as JSON."""


@dataclass
class EditControls:
    """The editing half of the viewer (absent when read-only)."""

    structure: gr.Dropdown
    mode: gr.Radio
    brush_mm: gr.Slider
    first: gr.Number
    last: gr.Number
    erase: gr.Button
    undo: gr.Button
    listing: gr.Textbox


def edits_json(edits: list[dict[str, Any]]) -> str:
    """The edit list as the reviewer's browser holds it and the decision carries it."""
    return json.dumps(edits, separators=(",", ":")) if edits else ""


def parse_edits(edits: list[dict[str, Any]] | None) -> list[MaskEdit]:
    return EditList.validate_python(edits or [])


# Two draws of the same plane at once write the same file into Gradio's cache while one of them is
# served (the browser then gets a broken image): the events that draw run one at a time.
_ONE_DRAW_AT_A_TIME = {"concurrency_id": "viewer-draw", "concurrency_limit": 1}


class Viewer:
    """The viewer's components and handlers; `source` (a gr.State) says what it shows."""

    def __init__(self, prefix: str, scenes: SceneCache, *, editable: bool) -> None:
        self.prefix = prefix
        self.scenes = scenes
        self.source = gr.State(None)
        self.edits = gr.State([])
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                self.image = gr.Image(
                    type="pil", format="png", interactive=False, show_label=False, height=IMAGE_HEIGHT_PX,
                    buttons=[], elem_id=f"{prefix}-viewer-image",
                )
            with gr.Column(scale=2, min_width=320):
                self.plane = gr.Radio(list(PLANES), value="axial", label="Plane", elem_id=f"{prefix}-viewer-plane")
                with gr.Row(equal_height=True):
                    self.previous = gr.Button(
                        "▲", size="sm", min_width=40, scale=0, elem_classes=["viewer-prev"], elem_id=f"{prefix}-viewer-prev"
                    )
                    self.index = gr.Slider(
                        0, 1, value=0, step=1, label="Plane (0: top, front or patient's right)", scale=4,
                        elem_id=f"{prefix}-viewer-index",
                    )
                    self.next = gr.Button(
                        "▼", size="sm", min_width=40, scale=0, elem_classes=["viewer-next"], elem_id=f"{prefix}-viewer-next"
                    )
                with gr.Row():
                    self.window = gr.Radio(
                        [*WINDOW_PRESETS, CUSTOM_WINDOW], value=DEFAULT_WINDOW, label="Window", scale=3,
                        elem_id=f"{prefix}-viewer-window",
                    )
                    self.width = gr.Number(
                        WINDOW_PRESETS[DEFAULT_WINDOW].width, label="W", minimum=1, min_width=70, scale=1,
                        elem_id=f"{prefix}-viewer-width",
                    )
                    self.level = gr.Number(
                        WINDOW_PRESETS[DEFAULT_WINDOW].level, label="L", min_width=70, scale=1,
                        elem_id=f"{prefix}-viewer-level",
                    )
                self.visible = gr.CheckboxGroup([], label="Show", elem_id=f"{prefix}-viewer-visible")
                self.flag = gr.Dropdown([], value=None, label="Jump to a QA flag", elem_id=f"{prefix}-viewer-flag")
                self.controls = self._edit_controls() if editable else None
                gr.HTML(f"<small>{KEYS_HELP}</small>", js_on_load=KEYS_JS, elem_id=f"{prefix}-viewer-keys")
                self.status = gr.Markdown(elem_id=f"{prefix}-viewer-status")
        self._wire()

    def _edit_controls(self) -> EditControls:
        prefix = self.prefix
        with gr.Accordion("Correct a contour", open=False, elem_id=f"{prefix}-viewer-editing"):
            with gr.Row():
                structure = gr.Dropdown([], label="Structure", scale=2, elem_id=f"{prefix}-edit-structure")
                mode = gr.Radio(["paint", "erase"], value="erase", label="Click to", scale=2, elem_id=f"{prefix}-edit-mode")
            brush_mm = gr.Slider(1, 50, value=DEFAULT_BRUSH_MM, step=0.5, label="Brush radius (mm)", elem_id=f"{prefix}-edit-brush")
            with gr.Row(equal_height=True):
                first = gr.Number(0, label="Erase from plane", precision=0, minimum=0, elem_id=f"{prefix}-edit-first")
                last = gr.Number(0, label="to plane", precision=0, minimum=0, elem_id=f"{prefix}-edit-last")
                erase = gr.Button("Erase range", size="sm", elem_id=f"{prefix}-edit-erase")
            undo = gr.Button("Undo last edit", size="sm", elem_id=f"{prefix}-edit-undo")
            listing = gr.Textbox(
                label="Edits to save (JSON)", lines=2, max_lines=4, interactive=False, elem_id=f"{prefix}-edit-list"
            )
        return EditControls(structure, mode, brush_mm, first, last, erase, undo, listing)

    # -- wiring -------------------------------------------------------------------------------------

    @property
    def opened(self) -> list[Any]:
        """The outputs `open` fills, in its order."""
        edit_outputs = [self.controls.structure, self.controls.listing] if self.controls else []
        return [
            self.plane, self.index, self.window, self.width, self.level, self.visible, self.flag, self.edits,
            *edit_outputs, self.image, self.status,
        ]

    def _wire(self) -> None:
        view = [self.source, self.edits, self.plane, self.index, self.width, self.level, self.visible]
        shown = [self.image, self.status]
        self.source.change(self.open, self.source, self.opened, show_progress="hidden")
        self.plane.input(self.on_plane, view, [self.index, *shown], show_progress="hidden", **_ONE_DRAW_AT_A_TIME)
        # Dragging the slider answers "input"; typing a number into its box answers "release" (on blur).
        self.index.input(self.draw, view, shown, show_progress="hidden", **_ONE_DRAW_AT_A_TIME, trigger_mode="always_last")
        self.index.release(self.draw, view, shown, show_progress="hidden", **_ONE_DRAW_AT_A_TIME, trigger_mode="always_last")
        self.previous.click(self.step(-1), view, [self.index, *shown], show_progress="hidden", **_ONE_DRAW_AT_A_TIME, trigger_mode="always_last")
        self.next.click(self.step(1), view, [self.index, *shown], show_progress="hidden", **_ONE_DRAW_AT_A_TIME, trigger_mode="always_last")
        self.window.input(self.on_window, [self.window, *view], [self.width, self.level, *shown], show_progress="hidden", **_ONE_DRAW_AT_A_TIME)
        for number in (self.width, self.level):
            number.submit(self.on_custom_window, view, [self.window, *shown], show_progress="hidden", **_ONE_DRAW_AT_A_TIME)
        self.visible.input(self.draw, view, shown, show_progress="hidden", **_ONE_DRAW_AT_A_TIME)
        self.flag.input(self.on_flag, [self.flag, *view], [self.plane, self.index, *shown], show_progress="hidden", **_ONE_DRAW_AT_A_TIME)
        if self.controls is None:
            return
        c = self.controls
        edited = [self.edits, c.listing, *shown]
        self.image.select(self.on_click, [*view, c.structure, c.mode, c.brush_mm], edited, show_progress="hidden")
        c.erase.click(self.on_erase, [*view, c.structure, c.first, c.last], edited, show_progress="hidden")
        c.undo.click(self.on_undo, view, edited, show_progress="hidden")

    # -- handlers -----------------------------------------------------------------------------------

    def scene(self, source: Source) -> Scene:
        return self.scenes.get(source)

    def open(self, source: Source | None) -> list[Any]:
        """A new card (or none): the scene's planes, structures and flags, its middle axial plane drawn."""
        edit_values: list[Any] = [gr.update(choices=[], value=None), ""] if self.controls else []
        preset = WINDOW_PRESETS[DEFAULT_WINDOW]
        if not source:
            return [
                "axial", gr.update(minimum=0, maximum=1, value=0), DEFAULT_WINDOW, preset.width, preset.level,
                gr.update(choices=[], value=[]), gr.update(choices=[], value=None), [], *edit_values, None, "",
            ]
        try:
            scene = self.scene(source)
        except SceneError as exc:
            return [gr.update() for _ in self.opened[:-1]] + [f"⚠ {exc}"]
        keys = scene.keys
        names = [(spec.display, spec.key) for spec, _ in scene.structures]
        if self.controls:
            edit_values = [gr.update(choices=names, value=keys[0] if keys else None), ""]
        count = scene.renderer.count("axial")
        middle = count // 2
        flags = [(f"{flag.severity}: {flag.message}", str(n)) for n, flag in enumerate(scene.flags) if flag.planes]
        image, status = self.draw(source, [], "axial", middle, preset.width, preset.level, keys)
        return [
            "axial", gr.update(minimum=0, maximum=count - 1, value=middle), DEFAULT_WINDOW, preset.width,
            preset.level, gr.update(choices=names, value=keys), gr.update(choices=flags, value=None), [],
            *edit_values, image, status,
        ]

    def draw(
        self,
        source: Source | None,
        edits: list[dict[str, Any]] | None,
        plane: Plane,
        index: float,
        width: float | None,
        level: float | None,
        visible: list[str] | None,
    ) -> tuple[Any, str]:
        """The plane as an image and a status line (empty, or what went wrong and what to do)."""
        if not source:
            return None, ""
        if width is None or level is None or width <= 0:
            return gr.update(), "⚠ The window needs a width above 0 HU and a level; choose a preset or type both."
        try:
            scene = self.scene(source)
            return scene.render(plane, int(index), Window(float(width), float(level)), visible or [], parse_edits(edits)), ""
        except (SceneError, EditError, ValidationError, ValueError) as exc:
            log.warning("viewer %s: %s", self.prefix, exc)
            return gr.update(), f"⚠ {exc}"

    def on_plane(self, source: Source | None, edits: Any, plane: Plane, index: float, *window: Any) -> list[Any]:
        if not source:
            return [gr.update(), None, ""]
        try:
            count = self.scene(source).renderer.count(plane)
        except SceneError as exc:
            return [gr.update(), gr.update(), f"⚠ {exc}"]
        middle = count // 2
        return [gr.update(minimum=0, maximum=count - 1, value=middle), *self.draw(source, edits, plane, middle, *window)]

    def step(self, delta: int) -> Callable[..., list[Any]]:
        def handler(source: Source | None, edits: Any, plane: Plane, index: float, *window: Any) -> list[Any]:
            if not source:
                return [gr.update(), None, ""]
            try:
                count = self.scene(source).renderer.count(plane)
            except SceneError as exc:
                return [gr.update(), gr.update(), f"⚠ {exc}"]
            moved = min(max(int(index) + delta, 0), count - 1)
            return [moved, *self.draw(source, edits, plane, moved, *window)]

        return handler

    def on_window(
        self, preset: str, source: Source | None, edits: Any, plane: Plane, index: float, width: Any, level: Any,
        visible: Any,
    ) -> list[Any]:
        if preset not in WINDOW_PRESETS:  # "custom": the numbers as they are
            return [gr.update(), gr.update(), *self.draw(source, edits, plane, index, width, level, visible)]
        chosen = WINDOW_PRESETS[preset]
        return [chosen.width, chosen.level, *self.draw(source, edits, plane, index, chosen.width, chosen.level, visible)]

    def on_custom_window(self, *view: Any) -> list[Any]:
        return [CUSTOM_WINDOW, *self.draw(*view)]

    def on_flag(self, chosen: str | None, source: Source | None, edits: Any, plane: Plane, index: float, *window: Any) -> list[Any]:
        if not source or chosen is None:
            return [gr.update(), gr.update(), gr.update(), ""]
        try:
            scene = self.scene(source)
            target = scene.flag_target(scene.flags[int(chosen)])
        except (SceneError, IndexError, ValueError) as exc:
            return [gr.update(), gr.update(), gr.update(), f"⚠ {exc}"]
        if target is None:
            return [gr.update(), gr.update(), gr.update(), "That flag names no planes; read its message."]
        plane, moved = target
        count = scene.renderer.count(plane)
        return [plane, gr.update(minimum=0, maximum=count - 1, value=moved), *self.draw(source, edits, plane, moved, *window)]

    def _with_edit(
        self, edit: MaskEdit | None, edits: list[dict[str, Any]] | None, view: tuple[Any, ...], message: str = ""
    ) -> list[Any]:
        """The edit list with ``edit`` appended (checked against the scene first) and the redrawn plane."""
        current = list(edits or [])
        if edit is not None:
            current.append(edit.model_dump(mode="json"))
        source, _, plane, index, width, level, visible = view
        image, status = self.draw(source, current, plane, index, width, level, visible)
        if status:  # the new edit does not fit: keep the list as it was
            return [edits or [], edits_json(edits or []), gr.update(), status]
        return [current, edits_json(current), image, message]

    def on_click(
        self, source: Source | None, edits: Any, plane: Plane, index: float, width: Any, level: Any, visible: Any,
        structure: str | None, mode: str, brush_mm: float, event: gr.SelectData,
    ) -> list[Any]:
        view = (source, edits, plane, index, width, level, visible)
        if not source:
            return [edits, gr.update(), gr.update(), ""]
        if not structure:
            return [edits, gr.update(), gr.update(), "Choose the structure to paint or erase first."]
        mapping = self.scene(source).renderer.mapping(plane)
        x, y = event.index
        if not (0 <= x <= mapping.width and 0 <= y <= mapping.height):
            return [edits, gr.update(), gr.update(), "Click on the CT image, not on the legend under it."]
        row, column = mapping.voxel_at(float(x), float(y))
        stroke = BrushStroke(
            structure=structure, mode=mode, plane=plane, index=int(index), points=[(row, column)],  # type: ignore[arg-type]
            radius_mm=float(brush_mm),
        )
        return self._with_edit(stroke, edits, view)

    def on_erase(
        self, source: Source | None, edits: Any, plane: Plane, index: float, width: Any, level: Any, visible: Any,
        structure: str | None, first: float | None, last: float | None,
    ) -> list[Any]:
        view = (source, edits, plane, index, width, level, visible)
        if not source:
            return [edits, gr.update(), gr.update(), ""]
        if not structure or first is None or last is None:
            return [edits, gr.update(), gr.update(), "Choose the structure and the first and last plane to erase."]
        low, high = sorted((int(first), int(last)))
        try:
            erase = EraseRange(structure=structure, plane=plane, first=low, last=high)
        except ValidationError as exc:
            return [edits, gr.update(), gr.update(), f"⚠ {exc.errors(include_url=False)[0]['msg']}"]
        return self._with_edit(erase, edits, view)

    def on_undo(self, source: Source | None, edits: Any, *view: Any) -> list[Any]:
        remaining = list(edits or [])[:-1]
        return self._with_edit(None, remaining, (source, remaining, *view), "" if edits else "No edit to undo.")

