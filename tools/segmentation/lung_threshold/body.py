"""The body outline (TG-263 `External`) at full resolution, from the working grid.

On the working grid: the largest non-air component, with the CT table taken off — the table's
shell is thin, so an in-plane opening of ``_TABLE_MM`` (on a ~4 mm grid) removes it, and only what
lies within that distance of the opened body is kept (the table's hollow core, once cut off, is no hole of the body
to fill). Then axial holes are filled: air inside the body (lungs, bowel, airways) is inside the
outline, as RT contours have it. At full resolution only a band around that edge is decided
again per voxel, at the air/tissue midpoint, so the outline follows the skin at the series' own
resolution.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tools.imaging.blocks import block_mean
from tools.segmentation.lung_threshold.grid import Spacing, dilate, erode, fill_holes_axial, upsample

# Thicker than a table's shell and its pad, thinner than any part of a body worth contouring.
_TABLE_MM = 8.0
# The grid the table is found on.
_COARSE_MM = 4.0
# Working voxels either side of the working-grid edge decided again at full resolution.
_BAND_STEPS = 1


def _disk(radius_mm: float, spacing: Spacing) -> np.ndarray:
    ry, rx = (max(1, int(round(radius_mm / s))) for s in spacing[1:])
    y, x = np.ogrid[-ry : ry + 1, -rx : rx + 1]
    disk = (y * spacing[1]) ** 2 + (x * spacing[2]) ** 2 <= radius_mm**2
    return disk[np.newaxis]


def _without_table(air_w: np.ndarray, spacing: Spacing) -> np.ndarray:
    labels, count = ndimage.label(~air_w)
    if count == 0:
        return np.zeros_like(air_w)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    raw = labels == int(np.argmax(sizes))
    # The opening only has to tell a shell from a body: on a coarse in-plane grid it costs a
    # fraction, and `raw` still draws the edge.
    factors = (1, *(max(1, int(_COARSE_MM // s)) for s in spacing[1:]))
    coarse = block_mean(raw.astype(np.float32), factors) >= 0.5  # type: ignore[arg-type]
    coarse_spacing = tuple(s * f for s, f in zip(spacing, factors, strict=True))
    disk = _disk(_TABLE_MM, coarse_spacing)  # type: ignore[arg-type]
    core = ndimage.binary_dilation(ndimage.binary_opening(coarse, structure=disk), structure=disk)
    whole = tuple(slice(0, n) for n in raw.shape)
    return fill_holes_axial(raw & upsample(core, factors, whole))  # type: ignore[arg-type]


def body_outline(hu: np.ndarray, air_w: np.ndarray, factors: tuple[int, int, int], spacing_w: Spacing, air_hu: float) -> np.ndarray:
    """The body on the full-resolution grid of ``hu`` (canonical view), from the working grid's air."""
    body_w = _without_table(air_w, spacing_w)
    whole = tuple(slice(0, n) for n in hu.shape)
    inner = upsample(erode(body_w, _BAND_STEPS), factors, whole)  # type: ignore[arg-type]
    outer = upsample(dilate(body_w, _BAND_STEPS), factors, whole)  # type: ignore[arg-type]
    band = outer & ~inner
    body = inner.copy()
    body[band] = hu[band] >= air_hu
    return fill_holes_axial(body)
