"""Binary masks <-> closed planar contours in patient coordinates (DICOM LPS, mm).

Contours are the marching-squares iso-line at 0.5 of each mask slice (as scikit-image's
``find_contours(..., fully_connected="high")``, computed here for all slices at once):
every vertex lies halfway between a pixel centre inside the mask and one outside, so no
pixel centre ever lies on a contour and the pixel-centre rasteriser below gives back
exactly the mask the contours came from.

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
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import depth_first_order

from tools.imaging.geometry import Geometry


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
    return [polygon for _, polygon in _outline(mask[np.newaxis].astype(bool, copy=False))]


def mask_to_contours(mask: np.ndarray, geometry: Geometry) -> list[SliceContour]:
    """Contours of a (slices, rows, columns) boolean mask, in patient coordinates.

    Slices come in array order, and within a slice contours in the raster order of their
    first vertex, so the output is deterministic.
    """
    if tuple(mask.shape) != geometry.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the volume geometry {geometry.shape}")
    outlines = _outline(mask.astype(bool, copy=False))
    if not outlines:
        return []
    # One matrix product for the whole structure: (column, row, slice) -> LPS mm.
    lengths = [len(polygon) for _, polygon in outlines]
    ijk = np.empty((sum(lengths), 3))
    ijk[:, :2] = np.concatenate([polygon for _, polygon in outlines])
    ijk[:, 2] = np.repeat([k for k, _ in outlines], lengths)
    xyz = geometry.index_to_patient(ijk)
    splits = np.cumsum(lengths)[:-1]
    pieces = np.split(xyz, splits)
    return [SliceContour(k, points) for (k, _), points in zip(outlines, pieces, strict=True)]


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


def _outline(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Every closed 0.5 iso-line of a (slices, rows, columns) boolean mask, as
    (slice index, (N, 2) (column, row) polygon), slices in order.

    This is marching squares with saddles resolved towards the foreground (scikit-image's
    ``fully_connected="high"``), done for the whole volume at once: a vertex is the midpoint
    of two 4-neighbour pixels of which one is set ("high") and one not ("low"), and the
    line is walked with the high pixel on a fixed side. The next vertex follows from the two
    pixels ahead: if the one on the low side is set the line turns to the low side (this
    keeps diagonal foreground neighbours together), else if the one on the high side is set
    it goes straight on, else it turns to the high side. The vertices then form one
    permutation whose cycles are the contours; a depth-first walk lists them.
    """
    occupied = np.flatnonzero(mask.any(axis=(1, 2)))
    if occupied.size == 0:
        return []
    k0, k1 = int(occupied[0]), int(occupied[-1]) + 1
    footprint = mask[k0:k1].any(axis=0)
    rows = np.flatnonzero(footprint.any(axis=1))
    columns = np.flatnonzero(footprint.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1
    # One pixel of background all round closes every contour, including at the image edge,
    # and keeps every pixel looked at below inside the array.
    padded = np.zeros((k1 - k0, r1 - r0 + 2, c1 - c0 + 2), dtype=bool)
    padded[:, 1:-1, 1:-1] = mask[k0:k1, r0:r1, c0:c1]
    height, width = padded.shape[1:]
    pixels = padded.reshape(-1)

    # Vertices between horizontal neighbours, then between vertical ones, each named by the
    # flat index of its left / top pixel. Every closed line has some of the first kind.
    # Neighbours in flat order that straddle a row or slice end are both padding, so
    # comparing the flat array with itself shifted finds exactly the in-slice vertices.
    horizontal = np.flatnonzero(pixels[:-1] != pixels[1:])
    vertical = np.flatnonzero(pixels[:-width] != pixels[width:])
    n_horizontal = horizontal.size
    count = n_horizontal + vertical.size
    left_set = pixels[horizontal]
    top_set = pixels[vertical]
    high = np.concatenate(
        (np.where(left_set, horizontal, horizontal + 1), np.where(top_set, vertical, vertical + width))
    )
    low = np.concatenate(
        (np.where(left_set, horizontal + 1, horizontal), np.where(top_set, vertical + width, vertical))
    )
    # Step (as a flat pixel offset) with the high pixel on the walker's left in (column, row).
    step = np.concatenate((np.where(left_set, width, -width), np.where(top_set, -1, 1)))
    low_ahead = low + step
    high_ahead = high + step
    turn_low = pixels[low_ahead]
    straight = ~turn_low & pixels[high_ahead]
    first = np.where(turn_low, low_ahead, np.where(straight, high_ahead, high))
    second = np.where(turn_low, low, np.where(straight, low_ahead, high_ahead))
    key = 2 * np.minimum(first, second) + (np.abs(first - second) != 1)
    vertex_of = np.empty(2 * pixels.size, dtype=np.int32)
    vertex_of[2 * horizontal] = np.arange(n_horizontal, dtype=np.int32)
    vertex_of[2 * vertical + 1] = np.arange(n_horizontal, count, dtype=np.int32)
    following = vertex_of[key]

    # Doubled pixel coordinates, so that every vertex is on the integer lattice.
    named = np.concatenate((horizontal, vertical))
    slice_of, within = np.divmod(named, height * width)
    row2, column2 = np.divmod(within, width)
    row2 *= 2
    column2 *= 2
    column2[:n_horizontal] += 1
    row2[n_horizontal:] += 1
    # A vertex is needed only where the direction changes; moves are one of 8 lattice
    # steps, never reversing, so "collinear" is "same step in as out".
    move = (row2[following] - row2) * 8 + (column2[following] - column2)
    corner = np.empty(count, dtype=bool)
    corner[following] = move != move[following]

    # Depth-first from an extra root linked to every horizontal vertex in raster order:
    # each contour is walked whole, contours ordered by their first horizontal vertex in
    # raster order (so by slice), which makes the output deterministic.
    root = count
    indptr = np.arange(count + 2, dtype=np.int32)
    indptr[-1] = count + n_horizontal
    indices = np.concatenate((following, np.arange(n_horizontal, dtype=np.int32)))
    graph = csr_matrix(
        (np.ones(indices.size, dtype=np.int8), indices, indptr), shape=(count + 1, count + 1)
    )
    order, predecessor = depth_first_order(graph, root, directed=True, return_predecessors=True)
    order = order[1:]
    contour = np.cumsum(predecessor[order] == root)
    kept = corner[order]
    order = order[kept]
    bounds = np.flatnonzero(np.diff(contour[kept])) + 1
    columns_out = column2[order] * 0.5 + (c0 - 1)
    rows_out = row2[order] * 0.5 + (r0 - 1)
    polygons = np.split(np.column_stack((columns_out, rows_out)), bounds)
    slice_index = slice_of[order[np.r_[0, bounds]]] + k0
    return [(int(k), polygon) for k, polygon in zip(slice_index, polygons, strict=True)]
