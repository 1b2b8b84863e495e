"""PNG previews a radiologist can judge at a glance: structure outlines on the CT.

Three axial slices (at 25, 50 and 75 % of the structures' cranio-caudal extent, from the
top) and one coronal reformat through the structures' centroid, in a lung window
(W 1500 / L -600), with outlines (not fills) in each structure's ROI colour and a legend.

They are drawn by the reviewer's viewer's renderer (tools/review/slice_view.py), so a preview
and the same plane in the viewer are the same image: radiological convention from the
volume's geometry, square display pixels, orientation letters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tools.imaging.orientation import nearest_directions
from tools.imaging.volume import Volume
from tools.reporting.models import DraftReport
from tools.review.slice_view import PRESENTATION_WINDOW, WINDOW_PRESETS, SliceRenderer
from tools.segmentation.base import SegmentationResult, StructureSpec

logger = logging.getLogger(__name__)

AXIAL_FRACTIONS = (0.25, 0.5, 0.75)


def _union(result: SegmentationResult, shape: tuple[int, ...]) -> np.ndarray:
    union = np.zeros(shape, dtype=bool)
    for item in result.structures:
        union |= item.mask
    return union


def _axial_indices(volume: Volume, union: np.ndarray, axis: int) -> list[int]:
    """Indices along array ``axis`` (the axial one) at AXIAL_FRACTIONS of the structures' extent, from the top."""
    others = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(union.any(axis=others))
    low, high = (int(present[0]), int(present[-1])) if present.size else (0, volume.array.shape[axis] - 1)
    superior_is_high = nearest_directions(volume.geometry)[axis] == "S"
    return [
        round(high - f * (high - low)) if superior_is_high else round(low + f * (high - low))
        for f in AXIAL_FRACTIONS
    ]


def _centroid_index(volume: Volume, union: np.ndarray, axis: int) -> int:
    others = tuple(a for a in range(3) if a != axis)
    profile = union.sum(axis=others, dtype=np.int64)
    if profile.sum() == 0:
        return volume.array.shape[axis] // 2
    return round(float((profile * np.arange(profile.size)).sum() / profile.sum()))


@dataclass(frozen=True)
class AxialPreview:
    """One rendered axial preview and where it was cut."""

    image: Image.Image
    index: int
    """position of the cut along the volume's array axis nearest to head-foot"""
    source_slice: bool
    """True when that axis is the slice axis: the cut is source image ``index`` itself"""


def _renderer(volume: Volume, result: SegmentationResult) -> SliceRenderer:
    for item in result.structures:
        if item.mask.shape != volume.array.shape:
            raise ValueError(
                f"Series {volume.series_instance_uid}: mask of {item.structure.key} has shape {item.mask.shape}, "
                f"the volume {volume.array.shape}; previews need masks on the volume's own grid."
            )
    return SliceRenderer(volume.array, volume.geometry, [(s.structure, s.mask) for s in result.structures])


def axial_previews(volume: Volume, result: SegmentationResult, renderer: SliceRenderer | None = None) -> list[AxialPreview]:
    """The axial previews at AXIAL_FRACTIONS of the structures' extent, top to bottom."""
    renderer = renderer or _renderer(volume, result)
    view = renderer.view
    axial_axis = view.perm[0]
    union = _union(result, volume.array.shape)
    count = volume.array.shape[axial_axis]
    previews = []
    for n, index in enumerate(_axial_indices(volume, union, axial_axis), start=1):
        plane = view.view_index(0, index)
        z = renderer.position_mm("axial", plane)
        title = f"Axial {n}/{len(AXIAL_FRACTIONS)}  z {z:.1f} mm  (slice {index + 1}/{count})"
        image = renderer.render("axial", plane, WINDOW_PRESETS["lung"], title=title)
        previews.append(AxialPreview(image=image, index=index, source_slice=axial_axis == 0))
    return previews


def render_previews(volume: Volume, result: SegmentationResult, out_dir: Path) -> list[Path]:
    """Write ``axial_1.png``, ``axial_2.png``, ``axial_3.png`` (top to bottom) and ``coronal.png``.

    Returns the paths in that order. Raises ValueError, naming the series and the
    structure, when a mask is not on the volume's grid.
    """
    renderer = _renderer(volume, result)
    out_dir.mkdir(parents=True, exist_ok=True)
    view = renderer.view
    coronal_axis = view.perm[1]
    union = _union(result, volume.array.shape)
    images: list[tuple[str, Image.Image]] = [
        (f"axial_{n}.png", preview.image) for n, preview in enumerate(axial_previews(volume, result, renderer), start=1)
    ]
    index = _centroid_index(volume, union, coronal_axis)
    plane = view.view_index(1, index)
    y = renderer.position_mm("coronal", plane)
    title = f"Coronal  y {y:.1f} mm  (plane {index + 1}/{volume.array.shape[coronal_axis]})"
    images.append(("coronal.png", renderer.render("coronal", plane, WINDOW_PRESETS["lung"], title=title)))

    paths: list[Path] = []
    for name, image in images:
        path = out_dir / name
        # zlib's fastest level: a third of the encoding time for 9 % more bytes on a chest CT.
        image.save(path, format="PNG", compress_level=1)
        paths.append(path)
    logger.info("Wrote %d previews of series %s to %s", len(paths), volume.series_instance_uid, out_dir)
    return paths


def render_radiograph_preview(volume: Volume, result: SegmentationResult, out_dir: Path) -> list[Path]:
    """Write ``radiograph.png``: the radiograph as its header says to show it, with the outlines."""
    renderer = _renderer(volume, result)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "radiograph.png"
    title = f"{volume.modality} frontal radiograph"
    renderer.render("coronal", 0, PRESENTATION_WINDOW, title=title).save(path, format="PNG", compress_level=1)
    logger.info("Wrote the radiograph preview of series %s to %s", volume.series_instance_uid, out_dir)
    return [path]


_FINDING_COLOURS = ((255, 215, 0), (0, 200, 255), (255, 80, 200), (120, 255, 120), (255, 140, 60))


def render_draft_preview(volume: Volume, draft: DraftReport, out_dir: Path) -> Path:
    """Write ``draft-findings.png``: the radiograph with each grounded finding's boxes, numbered as on the card."""
    boxes = []
    for number, finding in enumerate(draft.findings, start=1):
        if not finding.boxes:
            continue
        mask = np.zeros(volume.array.shape, dtype=bool)
        for box in finding.boxes:
            mask[0, box.row_min : box.row_max + 1, box.column_min : box.column_max + 1] = True
        spec = StructureSpec(
            key=f"finding-{number}", roi_name=f"Finding_{number}", display=f"Finding {number}", snomed_code="-",
            snomed_meaning="-", color_rgb=_FINDING_COLOURS[(number - 1) % len(_FINDING_COLOURS)],
        )
        boxes.append((spec, mask))
    renderer = SliceRenderer(volume.array, volume.geometry, boxes)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "draft-findings.png"
    title = f"AI-drafted findings ({draft.model}), not reviewed yet"
    renderer.render("coronal", 0, PRESENTATION_WINDOW, title=title).save(path, format="PNG", compress_level=1)
    return path
