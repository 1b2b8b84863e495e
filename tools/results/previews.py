"""PNG previews a radiologist can judge at a glance: structure outlines on the CT.

Three axial slices (at 25, 50 and 75 % of the structures' cranio-caudal extent, from the
top) and one coronal reformat through the structures' centroid, in a lung window
(W 1500 / L -600), with outlines (not fills) in each structure's ROI colour and a legend.

Orientation comes from the volume's geometry (DICOM PS3.3 C.7.6.2.1.1, LPS patient
coordinates), never from assumptions about the scan: every view is shown in radiological
convention, the patient's right on the image left, anterior at the top of axial images and
superior at the top of the coronal image, whether the series is head- or feet-first and
whichever way its rows and columns run. An oblique series is shown along the array axes
nearest to the patient axes. Pixels are resampled to square display pixels using the
voxel spacing, so a coronal view of 2.5 mm slices has the true aspect ratio.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.measure import find_contours

from tools.imaging.volume import Volume
from tools.segmentation.base import SegmentationResult

logger = logging.getLogger(__name__)

WINDOW_WIDTH_HU = 1500.0
WINDOW_LEVEL_HU = -600.0
AXIAL_FRACTIONS = (0.25, 0.5, 0.75)
LEGEND_HEIGHT_PX = 28
"""Height of the legend strip under each image; the CT occupies the rows above it."""
_MIN_SIDE_PX, _MAX_SIDE_PX = 512, 1024
_LINE_PX = 2
_FONT_PX = 14
_TEXT = (235, 235, 235)


@dataclass(frozen=True)
class _View:
    """How to cut one plane out of the (slices, rows, columns) array and orient it.

    ``axis`` is the array axis cut through; the plane's display rows run along array axis
    ``vertical`` and its display columns along ``horizontal``, reversed where flagged.
    """

    axis: int
    vertical: int
    horizontal: int
    flip_vertical: bool
    flip_horizontal: bool
    labels: tuple[str, str, str, str]
    """Patient directions at the image's top, bottom, left and right edges."""


def _axis_directions(volume: Volume) -> np.ndarray:
    """Row a: the patient-space (LPS) unit vector along which array axis a's index grows."""
    column_dir, row_dir, slice_dir = (np.asarray(v, dtype=float) for v in volume.geometry.direction)
    return np.stack([slice_dir, row_dir, column_dir])


def _axis_spacing(volume: Volume) -> tuple[float, float, float]:
    column_mm, row_mm, slice_mm = volume.geometry.spacing
    return (slice_mm, row_mm, column_mm)


def _patient_axis_owners(directions: np.ndarray) -> tuple[int, int, int]:
    """For patient x, y, z: the array axis most nearly along it (a one-to-one assignment)."""
    best = max(
        itertools.permutations(range(3)),
        key=lambda owners: sum(abs(directions[owners[p], p]) for p in range(3)),
    )
    return (best[0], best[1], best[2])


def _views(volume: Volume) -> tuple[_View, _View]:
    """The axial and the coronal view of ``volume`` in radiological convention."""
    directions = _axis_directions(volume)
    ax_x, ax_y, ax_z = _patient_axis_owners(directions)
    # Image right is the patient's left (+x); anterior (-y) up; superior (+z) up.
    flip_x = directions[ax_x, 0] < 0
    axial = _View(
        axis=ax_z, vertical=ax_y, horizontal=ax_x,
        flip_vertical=bool(directions[ax_y, 1] < 0), flip_horizontal=bool(flip_x),
        labels=("A", "P", "R", "L"),
    )
    coronal = _View(
        axis=ax_y, vertical=ax_z, horizontal=ax_x,
        flip_vertical=bool(directions[ax_z, 2] > 0), flip_horizontal=bool(flip_x),
        labels=("S", "I", "R", "L"),
    )
    return axial, coronal


def _plane(array: np.ndarray, view: _View, index: int) -> np.ndarray:
    plane = np.take(array, index, axis=view.axis)
    if view.vertical > view.horizontal:
        plane = plane.T
    if view.flip_vertical:
        plane = plane[::-1, :]
    if view.flip_horizontal:
        plane = plane[:, ::-1]
    return plane


def _window(hu: np.ndarray) -> np.ndarray:
    low = WINDOW_LEVEL_HU - WINDOW_WIDTH_HU / 2.0
    scaled = (hu.astype(np.float32) - low) * (255.0 / WINDOW_WIDTH_HU)
    return np.clip(scaled, 0.0, 255.0).astype(np.uint8)


def _display_size(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[int, int]:
    """(width, height) in square display pixels preserving the physical aspect ratio."""
    height_mm, width_mm = shape[0] * spacing[0], shape[1] * spacing[1]
    native = max(height_mm, width_mm) / min(spacing)
    longest = float(np.clip(native, _MIN_SIDE_PX, _MAX_SIDE_PX))
    pixel_mm = max(height_mm, width_mm) / longest
    return max(1, round(width_mm / pixel_mm)), max(1, round(height_mm / pixel_mm))


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=_FONT_PX)


def _render(
    volume: Volume,
    result: SegmentationResult,
    view: _View,
    index: int,
    title: str,
) -> Image.Image:
    spacing = _axis_spacing(volume)
    grey = _plane(volume.array, view, index)
    rows, columns = grey.shape
    width, height = _display_size((rows, columns), (spacing[view.vertical], spacing[view.horizontal]))
    scale_x, scale_y = width / columns, height / rows

    canvas = Image.new("RGB", (width, height + LEGEND_HEIGHT_PX), (0, 0, 0))
    ct = Image.fromarray(_window(grey), mode="L").resize((width, height), Image.Resampling.BILINEAR)
    canvas.paste(ct.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(canvas)

    for item in result.structures:
        mask = _plane(item.mask, view, index)
        if not mask.any():
            continue
        # Pad so outlines touching the image border still close.
        padded = np.pad(mask.astype(np.uint8), 1)
        for contour in find_contours(padded, 0.5):
            points = [((c - 0.5) * scale_x, (r - 0.5) * scale_y) for r, c in contour]
            draw.line(points, fill=item.structure.color_rgb, width=_LINE_PX, joint="curve")

    font = _font()
    top, bottom, left, right = view.labels
    style = {"font": font, "fill": _TEXT, "stroke_width": 2, "stroke_fill": (0, 0, 0)}
    draw.text((width / 2, 4), top, anchor="mt", **style)
    draw.text((width / 2, height - 4), bottom, anchor="mb", **style)
    draw.text((6, height / 2), left, anchor="lm", **style)
    draw.text((width - 6, height / 2), right, anchor="rm", **style)
    draw.text((6, 4), title, anchor="lt", **style)

    x = 6.0
    middle = height + LEGEND_HEIGHT_PX / 2
    for item in result.structures:
        draw.rectangle((x, middle - 5, x + 18, middle + 5), outline=item.structure.color_rgb, width=_LINE_PX)
        x += 24
        draw.text((x, middle), item.structure.display, anchor="lm", font=font, fill=_TEXT)
        x += draw.textlength(item.structure.display, font=font) + 18
    window = f"W {WINDOW_WIDTH_HU:.0f} / L {WINDOW_LEVEL_HU:.0f}"
    draw.text((width - 6, middle), window, anchor="rm", font=font, fill=_TEXT)
    return canvas


def _union(result: SegmentationResult, shape: tuple[int, ...]) -> np.ndarray:
    union = np.zeros(shape, dtype=bool)
    for item in result.structures:
        union |= item.mask
    return union


def _axial_indices(volume: Volume, union: np.ndarray, view: _View) -> list[int]:
    """Slice indices at AXIAL_FRACTIONS of the structures' extent, counted from the top."""
    others = tuple(a for a in range(3) if a != view.axis)
    present = np.flatnonzero(union.any(axis=others))
    low, high = (int(present[0]), int(present[-1])) if present.size else (0, volume.array.shape[view.axis] - 1)
    superior_is_high = _axis_directions(volume)[view.axis, 2] > 0
    return [
        round(high - f * (high - low)) if superior_is_high else round(low + f * (high - low))
        for f in AXIAL_FRACTIONS
    ]


def _centroid_index(volume: Volume, union: np.ndarray, view: _View) -> int:
    others = tuple(a for a in range(3) if a != view.axis)
    profile = union.sum(axis=others, dtype=np.int64)
    if profile.sum() == 0:
        return volume.array.shape[view.axis] // 2
    return round(float((profile * np.arange(profile.size)).sum() / profile.sum()))


def _position_mm(volume: Volume, axis: int, index: int, patient_axis: int) -> float:
    """Patient coordinate (mm, LPS) of the plane cut at ``index`` along array ``axis``."""
    ijk = np.zeros(3)
    ijk[2 - axis] = index  # geometry indices are (column, row, slice)
    return float(volume.geometry.index_to_patient(ijk)[patient_axis])


def render_previews(volume: Volume, result: SegmentationResult, out_dir: Path) -> list[Path]:
    """Write ``axial_1.png``, ``axial_2.png``, ``axial_3.png`` (top to bottom) and ``coronal.png``.

    Returns the paths in that order. Raises ValueError, naming the series and the
    structure, when a mask is not on the volume's grid.
    """
    for item in result.structures:
        if item.mask.shape != volume.array.shape:
            raise ValueError(
                f"Series {volume.series_instance_uid}: mask of {item.structure.key} has shape {item.mask.shape}, "
                f"the volume {volume.array.shape}; previews need masks on the volume's own grid."
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    axial, coronal = _views(volume)
    union = _union(result, volume.array.shape)
    count = volume.array.shape[axial.axis]
    images: list[tuple[str, Image.Image]] = []
    for n, index in enumerate(_axial_indices(volume, union, axial), start=1):
        z = _position_mm(volume, axial.axis, index, 2)
        title = f"Axial {n}/{len(AXIAL_FRACTIONS)}  z {z:.1f} mm  (slice {index + 1}/{count})"
        images.append((f"axial_{n}.png", _render(volume, result, axial, index, title)))
    index = _centroid_index(volume, union, coronal)
    y = _position_mm(volume, coronal.axis, index, 1)
    title = f"Coronal  y {y:.1f} mm  (plane {index + 1}/{volume.array.shape[coronal.axis]})"
    images.append(("coronal.png", _render(volume, result, coronal, index, title)))

    paths: list[Path] = []
    for name, image in images:
        path = out_dir / name
        image.save(path, format="PNG")
        paths.append(path)
    logger.info("Wrote %d previews of series %s to %s", len(paths), volume.series_instance_uid, out_dir)
    return paths
