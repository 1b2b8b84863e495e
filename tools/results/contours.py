"""Binary masks <-> closed planar contours in patient coordinates (DICOM LPS, mm).

Contours are the marching-squares iso-line at 0.5 of each mask slice (scikit-image
``find_contours``): every vertex lies halfway between a pixel centre inside the mask and
one outside, so no pixel centre ever lies on a contour and the pixel-centre rasteriser
below gives back exactly the mask the contours came from.

Holes and islands (DICOM PS3.3 C.8.8.6.3, CLOSED_PLANAR) follow the even-odd rule. The
standard has no flag telling an outer contour from a hole; a slice's contours are separate
CLOSED_PLANAR items, and a pixel belongs to the ROI when a ray from it crosses an odd
number of that slice's contours. So a donut is two contours (outer and inner boundary), an
island inside the hole is a third, and two islands are two contours. Readers must rasterise
a slice's contours together with this rule (XOR of the single-polygon fills gives the same);
:func:`rasterise_polygons` does exactly that.

Points are mapped with the full Image Plane geometry (PS3.3 C.7.6.2.1.1), never assuming an
axial identity orientation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from skimage.measure import find_contours

from tools.imaging.geometry import Geometry

# Cross products below this (in pixel units squared) mean three vertices are collinear;
# marching-squares vertices sit on a half-pixel lattice, so true turns are >= 0.25.
_COLLINEAR_EPS = 1e-9


@dataclass(frozen=True)
class SliceContour:
    """One closed planar contour on slice ``slice_index`` of a volume.

    ``points`` is (N, 3) in patient LPS mm, the polygon's vertices in order, not repeating
    the first vertex at the end (CLOSED_PLANAR closes it implicitly, PS3.3 C.8.8.6.1).
    """

    slice_index: int
    points: np.ndarray


def slice_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Closed polygons outlining a 2D boolean mask, as (N, 2) arrays of (column, row).

    Coordinates are fractional pixel indices (pixel centres at integers). Diagonally
    touching foreground pixels belong to one polygon (8-connected foreground). Collinear
    vertices are dropped, which changes no enclosed pixel centre.
    """
    if mask.ndim != 2:
        raise ValueError(f"slice_polygons needs a 2D mask, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return []
    columns = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    # One pixel of background all round closes every contour, including at the image edge.
    crop = np.pad(mask[r0:r1, c0:c1], 1).astype(np.float32)
    polygons = []
    for line in find_contours(crop, 0.5, fully_connected="high"):
        ring = line[:-1] if np.array_equal(line[0], line[-1]) else line
        ring = _drop_collinear(ring)
        if len(ring) >= 3:
            # (row, column) of the padded crop -> (column, row) of the full slice.
            polygons.append(np.column_stack((ring[:, 1] + (c0 - 1), ring[:, 0] + (r0 - 1))))
    return polygons


def mask_to_contours(mask: np.ndarray, geometry: Geometry) -> list[SliceContour]:
    """Contours of a (slices, rows, columns) boolean mask, in patient coordinates.

    Slices are visited in array order, polygons in scikit-image's order within a slice,
    so the output is deterministic.
    """
    if tuple(mask.shape) != geometry.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the volume geometry {geometry.shape}")
    occupied = np.flatnonzero(mask.any(axis=(1, 2)))
    slice_of: list[int] = []
    polygons: list[np.ndarray] = []
    for k in occupied:
        for polygon in slice_polygons(mask[k]):
            slice_of.append(int(k))
            polygons.append(polygon)
    if not polygons:
        return []
    # One matrix product for the whole structure: (column, row, slice) -> LPS mm.
    lengths = [len(p) for p in polygons]
    ijk = np.empty((sum(lengths), 3))
    ijk[:, :2] = np.concatenate(polygons)
    ijk[:, 2] = np.repeat(slice_of, lengths)
    xyz = geometry.index_to_patient(ijk)
    splits = np.cumsum(lengths)[:-1]
    return [SliceContour(k, points) for k, points in zip(slice_of, np.split(xyz, splits), strict=True)]


def rasterise_polygons(polygons: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Fill (N, 2) (column, row) polygons on a (rows, columns) grid with the even-odd rule.

    A pixel is set when its centre is inside an odd number of the polygons; edges are
    half-open (a centre exactly on a left or top edge is inside), so adjacent polygons
    never share a pixel. The inverse of :func:`slice_polygons`.
    """
    rows, columns = shape
    edges = [(p, np.roll(p, -1, axis=0)) for p in polygons if len(p) >= 3]
    if not edges:
        return np.zeros(shape, dtype=bool)
    start = np.concatenate([a for a, _ in edges]).astype(float)
    end = np.concatenate([b for _, b in edges]).astype(float)
    x0, y0, x1, y1 = start[:, 0], start[:, 1], end[:, 0], end[:, 1]
    # Row r crosses an edge when min(y) <= r < max(y) (horizontal edges never cross).
    first = np.clip(np.ceil(np.minimum(y0, y1)), 0, rows).astype(np.int64)
    stop = np.clip(np.ceil(np.maximum(y0, y1)), 0, rows).astype(np.int64)
    counts = stop - first
    crossing = counts > 0
    x0, y0, x1, y1, first, counts = (a[crossing] for a in (x0, y0, x1, y1, first, counts))
    edge = np.repeat(np.arange(counts.size), counts)
    offsets = np.arange(edge.size) - np.repeat(np.cumsum(counts) - counts, counts)
    row = first[edge] + offsets
    x = x0[edge] + (row - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    # A closed polygon crosses every row an even number of times: spans are consecutive pairs.
    span_row = row[0::2]
    span_start = np.clip(np.ceil(x[0::2]), 0, columns).astype(np.int64)
    span_stop = np.clip(np.ceil(x[1::2]), 0, columns).astype(np.int64)
    width = columns + 1
    size = rows * width
    delta = np.bincount(span_row * width + span_start, minlength=size) - np.bincount(
        span_row * width + span_stop, minlength=size
    )
    return np.cumsum(delta.reshape(rows, width)[:, :columns], axis=1) > 0


def contours_to_mask(
    contours: Iterable[np.ndarray], geometry: Geometry, max_plane_distance_mm: float = 0.05
) -> np.ndarray:
    """Rasterise (N, 3) patient-coordinate contours onto the volume grid (even-odd per slice).

    Contours of fewer than three points enclose nothing and are ignored. Each contour is
    assigned to the slice whose plane it lies on; a contour further than
    ``max_plane_distance_mm`` from every slice plane, or with points on several planes, is
    refused, since it cannot be drawn on this grid without resampling.
    """
    slices, rows, columns = geometry.shape
    slice_spacing = geometry.spacing[2]
    per_slice: dict[int, list[np.ndarray]] = {}
    for number, points in enumerate(contours):
        ijk = geometry.patient_to_index(np.asarray(points, dtype=float).reshape(-1, 3))
        if len(ijk) < 3:
            continue  # fewer than three points enclose no pixel
        k = int(np.rint(ijk[:, 2].mean()))
        off_plane = float(np.abs(ijk[:, 2] - k).max()) * slice_spacing
        if not 0 <= k < slices or off_plane > max_plane_distance_mm:
            raise ValueError(
                f"contour {number} does not lie on a slice of this volume (nearest slice index {k} of "
                f"{slices}, {off_plane:.3f} mm off its plane, tolerance {max_plane_distance_mm} mm); "
                "check that the contours belong to this series' frame of reference and grid"
            )
        per_slice.setdefault(k, []).append(ijk[:, :2])
    mask = np.zeros(geometry.shape, dtype=bool)
    for k, polygons in per_slice.items():
        mask[k] = rasterise_polygons(polygons, (rows, columns))
    return mask


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Remove repeated vertices and those on the straight line through their neighbours."""
    moved = np.any(ring != np.roll(ring, 1, axis=0), axis=1)
    ring = ring[moved] if moved.any() else ring[:1]
    before = ring - np.roll(ring, 1, axis=0)
    after = np.roll(ring, -1, axis=0) - ring
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    return ring[np.abs(cross) > _COLLINEAR_EPS]
