"""Pixel checks of a rendered plane: the outline of each structure lies on its mask's border and covers it.

Shared by the renderer's unit tests and the viewer's browser tests, which read the PNG the page shows.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tools.review.slice_view import DisplayMapping

COVERED = 0.97
"""Share of a mask's border voxels that must have outline pixels over them (the orientation letters and
the title are drawn over the image and may hide a few)."""


def colour_mask(image: np.ndarray, colour: tuple[int, int, int], mapping: DisplayMapping) -> np.ndarray:
    """Pixels of exactly ``colour`` in the CT area (the legend strip under it left out)."""
    return np.all(image[: mapping.height] == np.asarray(colour, dtype=np.uint8), axis=-1)


def assert_outline_matches(image: np.ndarray, plane_mask: np.ndarray, mapping: DisplayMapping, colour: tuple[int, int, int]) -> None:
    """Every ``colour`` pixel lies within a voxel of the mask's border, and the border is outlined."""
    outline = colour_mask(image, colour, mapping)
    ys, xs = np.nonzero(outline)
    assert ys.size > 0, f"no pixel of colour {colour} where the mask has {int(plane_mask.sum())} voxels"
    rows, columns = (np.rint(v).astype(int) for v in mapping.voxel_at(xs + 0.5, ys + 0.5))
    rows, columns = np.clip(rows, 0, mapping.rows - 1), np.clip(columns, 0, mapping.columns - 1)
    padded = np.pad(plane_mask, 1)
    near_border = ndimage.binary_dilation(padded, iterations=2) & ~ndimage.binary_erosion(padded, iterations=2)
    off = ~near_border[rows + 1, columns + 1]
    assert not off.any(), f"{int(off.sum())} of {off.size} outline pixels lie away from the mask's border"
    border = plane_mask & ~ndimage.binary_erosion(plane_mask)
    r, c = np.nonzero(border)
    x, y = mapping.display_at(r, c)
    distance = ndimage.distance_transform_edt(~outline)
    reach = max(mapping.width / mapping.columns, mapping.height / mapping.rows) + 2.0
    inside = (x < mapping.width) & (y < mapping.height)
    near = distance[np.clip(y.astype(int), 0, mapping.height - 1), np.clip(x.astype(int), 0, mapping.width - 1)] <= reach
    share = float(near[inside].mean())
    assert share >= COVERED, f"only {share:.1%} of the mask's border voxels are outlined"
