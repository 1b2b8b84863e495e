"""Body, airways and lungs on the working grid: the topology steps of the lung engine.

Arrays are in the canonical view (superior, posterior, patient-left axes), on the working
grid of tools/segmentation/lung_threshold/grid.py; the steps are those numbered 2-4 in the
package's description (tools/segmentation/lung_threshold/__init__.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tools.segmentation.lung_threshold.grid import (
    SLICE_2D,
    Spacing,
    dilate,
    erode,
    fill_holes_axial,
    filter_size,
    in_plane_box,
    padded_box,
)

logger = logging.getLogger(__name__)

# The axes of a slice: in-plane (4-connected) erosion and growth.
_IN_PLANE = (1, 2)

# Pure gas (bowel, stomach): most voxels below this. Even emphysematous lung stays above.
_GAS_HU = -950.0
# The trachea is 15-25 mm wide in adults (area ~2-5 cm^2); accept a generous range.
_TRACHEA_AREA_MM2 = (60.0, 900.0)
_TRACHEA_MAX_ELONGATION = 2.5
_TRACHEA_MIDLINE_TOLERANCE_MM = 40.0
# Look for the trachea this far below the top of the scan.
_TRACHEA_SEARCH_DEPTH_MM = 60.0
# Airway lumen: below the midpoint of air and lung, and never above this.
_AIRWAY_LUMEN_MAX_HU = -900.0
# Trachea and bronchi down to the segmental level hold well under this; more is a leak.
_AIRWAY_MAX_ML = 350.0
_AIRWAY_LEAK_STEP_HU = 15.0
_AIRWAY_LEAK_RETRIES = 6
# Removed around the lumen: its wall's partial-volume voxels.
_AIRWAY_WALL_MM = 2.0
# A lung holds at least this much air; smaller lung-like pockets are left out.
MIN_LUNG_ML = 15.0
# One region with this share of its voxels on each side of the body midline is two lungs joined.
_JOINED_SIDE_FRACTION = 0.2
_THIN_JUNCTION_STEPS = 4
_SPLIT_STEP_MM = 1.5
_SPLIT_MIN_CORE_FRACTION = 0.1
# A part of a lung cut off by dense tissue (an apex behind scarring, a segment behind
# atelectasis) is a further air region this close to a lung, lung tissue (hardly any pure
# gas: bowel gas is mostly below -950 HU) and on that lung's side of the body's midline.
_FRAGMENT_MIN_ML = 2.0
_FRAGMENT_REACH_MM = 10.0
_FRAGMENT_MAX_GAS_FRACTION = 0.15
# ...and aerated: lung parenchyma's median sits near -850 HU (nsclc-lung1-001's cut-off apex:
# -821). Stool in the colon under the diaphragm mixes gas and matter to well above this.
_FRAGMENT_MAX_MEDIAN_HU = -750.0


def body_mask(air: np.ndarray) -> np.ndarray:
    """The patient: the largest non-air component with its axial holes filled."""
    labels, count = ndimage.label(~air)
    if count == 0:
        return np.zeros_like(air)
    body = labels == _largest_label(labels)
    # A hole is enclosed by the body, so it lies within the body's in-plane box: filled there.
    box = in_plane_box(body)
    body[box] = fill_holes_axial(body[box])
    return body


def _largest_label(labels: np.ndarray) -> int:
    """The label with the most voxels (the lowest of equals), as an argmax of all the counts.

    Counted in the largest bounding boxes only: a label cannot hold more voxels than its
    box, so once a box is smaller than the best count so far, no later label can win. A
    whole-array bincount costs several times more on a full-resolution grid.
    """
    boxes = ndimage.find_objects(labels)
    volumes = np.array([np.prod([s.stop - s.start for s in box]) for box in boxes])
    best, best_size = 0, -1
    for index in np.argsort(volumes, kind="stable")[::-1]:
        if volumes[index] < best_size:
            break
        size = int(np.count_nonzero(labels[boxes[index]] == index + 1))
        if size > best_size or (size == best_size and index + 1 < best):
            best, best_size = int(index) + 1, size
    return best


def _find_trachea(inside_air: np.ndarray, work: np.ndarray, body: np.ndarray, spacing: Spacing) -> np.ndarray | None:
    """The trachea's section in the top slices: small, round, pure air, near the body's midline.

    Returns a mask of that section (in the full working array) or None when there is none, as
    in a scan of the lung bases or the abdomen.
    """
    sz, sy, sx = spacing
    top = inside_air.shape[0]
    first = max(0, top - 1 - int(round(_TRACHEA_SEARCH_DEPTH_MM / sz)))
    labels, _ = ndimage.label(inside_air[first:], structure=SLICE_2D)
    areas = np.bincount(labels.ravel()).astype(float) * (sy * sx)
    gas = np.bincount(labels[work[first:] < _GAS_HU], minlength=areas.size) * (sy * sx)
    objects = ndimage.find_objects(labels)
    for k in range(labels.shape[0] - 1, -1, -1):
        body_cols = np.flatnonzero(body[first + k].any(axis=0))
        if body_cols.size == 0:
            continue
        mid_x = (body_cols[0] + body_cols[-1]) / 2.0
        best: tuple[float, int] | None = None
        for lab in np.unique(labels[k]):
            if lab == 0 or not _TRACHEA_AREA_MM2[0] <= areas[lab] <= _TRACHEA_AREA_MM2[1]:
                continue
            box = objects[lab - 1]
            height = (box[1].stop - box[1].start) * sy
            width = (box[2].stop - box[2].start) * sx
            # Round-ish (lung apices are elongated) and mostly pure air (lung tissue is not).
            if max(height, width) > _TRACHEA_MAX_ELONGATION * min(height, width) or gas[lab] < 0.5 * areas[lab]:
                continue
            offset = abs((box[2].start + box[2].stop - 1) / 2.0 - mid_x) * sx
            if offset <= _TRACHEA_MIDLINE_TOLERANCE_MM and (best is None or offset < best[0]):
                best = (offset, int(lab))
        if best is not None:
            seed = np.zeros(inside_air.shape, dtype=bool)
            seed[first + k] = labels[k] == best[1]
            return seed
    return None


def airway_mask(inside_air: np.ndarray, work: np.ndarray, body: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Trachea and bronchi: grown from the trachea through lumen air, plus their wall's partial volume.

    The lumen is pure air (about -1000 HU) while lung tissue sits near -850 HU, so the airway
    tree is the region of voxels below the midpoint connected to the trachea. Should that
    region leak into a lung (emphysema, noise), it would be far larger than any airway tree:
    the threshold is then lowered until it is not. The grown tree is widened by a wall margin
    so that no partial-volume ring keeps the two lungs connected through the carina. Parts of
    it inside a lung are given back by the per-slice hole filling; what stays out is the
    trachea and the bronchi up to where the lung surrounds them.
    """
    seed = _find_trachea(inside_air, work, body, spacing)
    if seed is None:
        return np.zeros_like(inside_air)
    sample = work[inside_air][:: max(1, int(np.count_nonzero(inside_air) // 200_000))]
    threshold = min((-1000.0 + float(np.median(sample))) / 2.0, _AIRWAY_LUMEN_MAX_HU)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    region = seed
    for _ in range(_AIRWAY_LEAK_RETRIES):
        lumen = (work < threshold) & inside_air
        labels, count = ndimage.label(lumen)
        hit = np.unique(labels[seed & lumen])
        hit = hit[hit > 0]
        grown = _members(labels, count, hit) if hit.size else seed
        if np.count_nonzero(grown) * voxel_ml <= _AIRWAY_MAX_ML:
            region = grown | seed
            break
        threshold -= _AIRWAY_LEAK_STEP_HU
    else:
        logger.warning("airway growth leaked at every threshold down to %.0f HU; only the trachea section is removed", threshold)
    # The wall is looked for around the tree only: its box, grown by the filter's reach.
    size = filter_size(_AIRWAY_WALL_MM, spacing)
    box = padded_box(region, max(size) // 2)
    wall = np.zeros_like(region)
    wall[box] = ndimage.maximum_filter(region[box].view(np.uint8), size=size) > 0
    return wall & inside_air


def _members(labels: np.ndarray, count: int, wanted: np.ndarray) -> np.ndarray:
    """``np.isin(labels, wanted)`` for labels 0..count, by one lookup per voxel (no sorting)."""
    lookup = np.zeros(count + 1, dtype=bool)
    lookup[wanted] = True
    return lookup[labels]


@dataclass
class Lungs:
    labels: np.ndarray
    """working grid: 0 background, 1 and 2 the lungs (in no particular side order)"""
    cut_at_midline: bool
    """joined lungs with no narrowing to split at, cut at the body's midline plane instead"""


def select_lungs(candidates: np.ndarray, work: np.ndarray, body: np.ndarray, spacing: Spacing) -> Lungs | None:
    """The two lungs among the air regions inside the body (bowel gas and small pockets out).

    None when no air region is lung-like: none of at least ``MIN_LUNG_ML`` that is not pure gas.
    """
    labels, count = ndimage.label(candidates)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    # Gas is pure air: most of its voxels sit near -1000 HU. Lung tissue keeps the median higher.
    gas = np.bincount(labels[work < _GAS_HU].ravel(), minlength=count + 1)
    gas_like = gas > 0.5 * sizes
    order = [int(i) for i in np.argsort(sizes[1:])[::-1] + 1]
    lung_like = [i for i in order if sizes[i] * voxel_ml >= MIN_LUNG_ML and not gas_like[i]]
    if not lung_like:
        return None
    first = labels == lung_like[0]
    out = np.zeros(labels.shape, dtype=np.uint8)
    cut = False
    if _spans_midline(first, body):
        out, cut = _split(first, spacing, body)
        chosen = lung_like[:1]
    else:
        out[first] = 1
        if len(lung_like) > 1:
            out[labels == lung_like[1]] = 2
        chosen = lung_like[:2]
    gas_fraction = gas / np.maximum(sizes, 1)
    fragments = [
        i for i in order
        if i not in chosen and sizes[i] * voxel_ml >= _FRAGMENT_MIN_ML and gas_fraction[i] <= _FRAGMENT_MAX_GAS_FRACTION
    ]
    measured = _boxes_and_medians(labels, count, work, fragments)
    kept = [(i, box) for i, (box, median) in zip(fragments, measured, strict=True) if median <= _FRAGMENT_MAX_MEDIAN_HU]
    _attach_fragments(out, labels, kept, spacing, _body_mid_column(body))
    return Lungs(labels=out, cut_at_midline=cut)


def _boxes_and_medians(
    labels: np.ndarray, count: int, work: np.ndarray, wanted: list[int]
) -> list[tuple[tuple[slice, ...], float]]:
    """Bounding box and median HU of each label in ``wanted``, from one pass over the array.

    The same as ``ndimage.find_objects`` and a median per box, without scanning for every
    other (small) region.
    """
    if not wanted:
        return []
    lookup = np.zeros(count + 1, dtype=bool)
    lookup[wanted] = True
    where = np.nonzero(lookup[labels])
    found = labels[where]
    out = []
    for i in wanted:
        own = tuple(axis[found == i] for axis in where)
        box = tuple(slice(int(axis.min()), int(axis.max()) + 1) for axis in own)
        out.append((box, float(np.median(work[own]))))
    return out


def _attach_fragments(
    out: np.ndarray, labels: np.ndarray, fragments: list[tuple[int, tuple[slice, ...]]], spacing: Spacing, mid: float
) -> None:
    """Give each fragment (a label in ``labels``, with its box) to the lung within reach on its side, in place.

    Looked at in the fragment's box only, grown by the reach: cheap whatever the volume.
    """
    if not fragments:
        return
    reach = [int(np.ceil(_FRAGMENT_REACH_MM / s)) for s in spacing]
    lung_columns = [_mean_column(out == value) for value in (1, 2)]
    for i, found in fragments:
        box = tuple(slice(max(0, b.start - r), min(n, b.stop + r)) for b, r, n in zip(found, reach, labels.shape, strict=True))
        own = labels[box] == i
        near = ndimage.maximum_filter(own.view(np.uint8), size=filter_size(_FRAGMENT_REACH_MM, spacing)) > 0
        hits = np.bincount(out[box][near].ravel(), minlength=3)[1:]
        if not hits.any():
            continue
        value = int(np.argmax(hits)) + 1
        column = _mean_column(own) + box[2].start
        lung_column = lung_columns[value - 1]
        if lung_column is not None and (column - mid) * (lung_column - mid) > 0:
            out[box][own] = value


def _mean_column(mask: np.ndarray) -> float | None:
    counts = np.count_nonzero(mask, axis=(0, 1))
    total = counts.sum()
    return float(counts @ np.arange(counts.size)) / total if total else None


def _body_mid_column(body: np.ndarray) -> float:
    cols = np.flatnonzero(body.any(axis=(0, 1)))
    return (cols[0] + cols[-1]) / 2.0 if cols.size else body.shape[2] / 2.0


def _spans_midline(mask: np.ndarray, body: np.ndarray) -> bool:
    """True when a region lies substantially on both sides of the body's midline (two lungs joined)."""
    per_column = np.count_nonzero(mask, axis=(0, 1))
    mid = int(round(_body_mid_column(body)))
    total = per_column.sum()
    return bool(min(per_column[:mid].sum(), per_column[mid:].sum()) >= _JOINED_SIDE_FRACTION * total)


def _split(mask: np.ndarray, spacing: Spacing, body: np.ndarray) -> tuple[np.ndarray, bool]:
    """Split joined lungs at their narrowest junction: watershed of the distance map from two cores.

    Returns the labels and whether the fallback (a cut at the body's midline) was needed.
    """
    box = ndimage.find_objects(mask.view(np.uint8))[0]
    sub = mask[box]
    out = np.zeros(mask.shape, dtype=np.uint8)
    # Usually the lungs meet along a junction line a voxel or two thick: a small in-plane
    # erosion separates them and growing back inside the region restores the rest.
    eroded = sub
    for steps in range(1, _THIN_JUNCTION_STEPS + 1):
        eroded = erode(eroded, 1, _IN_PLANE)
        cores, count = ndimage.label(eroded)
        markers = _two_cores(cores, count)
        if markers is not None:
            out[box] = _grow_inside(markers, sub, steps)
            return out, False
    distance = ndimage.distance_transform_edt(sub, sampling=spacing)
    for depth in np.arange(_SPLIT_STEP_MM, float(distance.max()), _SPLIT_STEP_MM):
        cores, count = ndimage.label(distance > depth)
        markers = _two_cores(cores, count)
        if markers is not None:
            # Imported here: scikit-image's segmentation loads scipy.spatial (about 75 ms), and
            # only lungs joined over a wide front come this far (issue 11: imports where used).
            from skimage.segmentation import watershed

            out[box] = watershed(-distance, markers, mask=sub).astype(np.uint8)
            return out, False
    # No narrowing at all: cut at the body's midline.
    mid = int(round(_body_mid_column(body)))
    out[:, :, :mid][mask[:, :, :mid]] = 1
    out[:, :, mid:][mask[:, :, mid:]] = 2
    return out, True


def _two_cores(cores: np.ndarray, count: int) -> np.ndarray | None:
    """Markers 1 and 2 on the two largest cores, if the second is not a mere fragment."""
    if count < 2:
        return None
    sizes = np.bincount(cores.ravel())
    sizes[0] = 0
    first, second = (int(i) for i in np.argsort(sizes)[::-1][:2])
    if sizes[second] < _SPLIT_MIN_CORE_FRACTION * sizes[first]:
        return None
    values = np.zeros(count + 1, dtype=np.int32)
    values[first] = 1
    values[second] = 2
    return values[cores]


def _grow_inside(markers: np.ndarray, region: np.ndarray, steps: int) -> np.ndarray:
    """Undo an in-plane erosion of ``steps`` layers: grow markers 1 and 2 back through ``region``.

    Sections the erosion removed entirely (an apex or base tip) go to the lung on their
    side of the plane halfway between the two lungs' mean columns.
    """
    out = markers.astype(np.uint8)
    for _ in range(steps + 1):
        free = region & (out == 0)
        grown = [dilate(out == value, 1, _IN_PLANE) & free for value in (1, 2)]
        out[grown[0]] = 1
        out[grown[1] & ~grown[0]] = 2
    rest = region & (out == 0)
    if rest.any():
        columns = np.arange(region.shape[2], dtype=float)
        mean = [float(np.count_nonzero(out == v, axis=(0, 1)) @ columns) / max(1, np.count_nonzero(out == v)) for v in (1, 2)]
        low, high = (1, 2) if mean[0] <= mean[1] else (2, 1)
        side = np.where(columns < (mean[0] + mean[1]) / 2.0, low, high).astype(np.uint8)
        out[rest] = np.broadcast_to(side, region.shape)[rest]
    return out
