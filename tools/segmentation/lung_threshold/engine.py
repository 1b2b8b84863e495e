"""The `lung-threshold` engine: the steps of tools/segmentation/lung_threshold/__init__.py put together.

Runs in the canonical view of the volume (superior, posterior, patient-left axes; see
tools/imaging/orientation.py), then maps the masks back onto the volume's own grid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from tools.imaging.blocks import block_mean
from tools.imaging.orientation import Reorientation, reorient
from tools.imaging.volume import Volume
from tools.segmentation.base import EngineError, SegmentationResult, StructureMask, resolve_targets
from tools.segmentation.lung_threshold.anatomy import MIN_LUNG_ML, airway_mask, body_mask, select_lungs
from tools.segmentation.lung_threshold.body import body_outline
from tools.segmentation.lung_threshold.grid import (
    Box,
    Spacing,
    dilate,
    fill_holes_3d,
    fill_holes_axial_rest,
    filter_size,
    in_plane_box,
    padded_box,
    upsample,
    working_factors,
)
from tools.segmentation.qa import centroid_x

logger = logging.getLogger(__name__)

ENGINE_NAME = "lung-threshold"
ENGINE_VERSION = "1.1.0"

_SUPPORTED = ("left-lung", "right-lung", "body")
# Midpoint between aerated lung (~-850 HU) and soft tissue (~+40 HU): where a voxel is half
# lung by partial volume. Used to find the regions; the final threshold is measured.
_INITIAL_THRESHOLD_HU = -400.0
_SOFT_TISSUE_HU = 40.0
# The tissue around the lungs is fat (-100) to muscle (+60); outside that the ring sampled
# something else (bone, contrast) and the fixed value is the better estimate.
_TISSUE_RANGE_HU = (-150.0, 100.0)
_EXPECTED_CONTRAST_HU = 800.0
# Confidence factor for joined lungs that had to be cut at the body's midline.
_SPLIT_PENALTY = 0.8
# How far (working voxels) the full-resolution mask may reach beyond the working-grid lung.
_TERRITORY_STEPS = 2
# The tissue next to a lung is sampled this many working voxels out (past partial volume).
_RING_INNER = 1
_RING_OUTER = 3
# Closes notches left by vessels that touch the pleura.
_CLOSING_RADIUS_MM = 3.0
# Working voxels around a lung's box, so that the closing does not meet the box's edge.
_CLOSING_PAD_W = 3
# The lung's edge as a radiotherapy contour draws it: the in-plane ring of partial-volume
# voxels just outside the half-way iso-line, as long as a voxel is still at least a quarter
# lung (below lung + 0.75 x (tissue - lung)). Manual contours follow the visible edge in a
# lung window, about a pixel outside the midpoint (nsclc-lung1-001: the missed lung was 1-2
# mm deep at -390 to -70 HU all around). Not along the slice axis: slices are 2.5-5 mm apart.
_EDGE_RING_MM = 1.0
_EDGE_FRACTION = 0.75
# Largest axial hole filled: a hilar vessel or a bronchus with its wall (about 25 mm across).
_MAX_AXIAL_HOLE_MM2 = 500.0


def _grow_labels(labels: np.ndarray, steps: int, factors: tuple[int, int, int]) -> np.ndarray:
    """Let labels 1 and 2 grow ``steps`` voxels; where both arrive, neither takes the voxel.

    They grow in-plane always (room for the closing and the partial-volume edge) and along
    the slice axis only where working voxels span several slices: a thick slice is the
    same at both resolutions, and growing through it would reach the abdomen's gas.
    """
    axes = (1, 2) if factors[0] == 1 else (0, 1, 2)
    grown = [dilate(labels == value, steps, axes) for value in (1, 2)]
    out = labels.copy()
    free = labels == 0
    out[free & grown[0] & ~grown[1]] = 1
    out[free & grown[1] & ~grown[0]] = 2
    return out


def _embed(part: np.ndarray, box: Box, shape: tuple[int, ...]) -> np.ndarray:
    """``part`` placed at ``box`` in an array of ``shape``, zero elsewhere."""
    out = np.zeros(shape, dtype=part.dtype)
    out[box] = part
    return out


def _ring_median(work: np.ndarray, mask: np.ndarray, exclude: np.ndarray) -> float | None:
    """Median HU of the tissue ``_RING_INNER``..``_RING_OUTER`` working voxels outside ``mask``.

    Voxels in ``exclude`` (air: other lung, airways, outside) are not tissue and are left out.
    """
    near = dilate(mask, _RING_INNER)
    far = dilate(near, _RING_OUTER - _RING_INNER)
    ring = far & ~near & ~exclude
    return float(np.median(work[ring])) if ring.any() else None


def _refine(
    hu: np.ndarray, territory: np.ndarray, blocked: np.ndarray, thresholds: tuple[float, float], spacing: Spacing
) -> np.ndarray:
    """One lung at full resolution: threshold inside its territory, close, fill holes, add the edge ring.

    ``thresholds``: the partial-volume midpoint and the edge ring's limit (``_EDGE_FRACTION``).
    Axial holes are filled up to the size of a vessel or bronchus section. A larger one is
    the dome of the diaphragm rising into the slice, or the airway (kept out by ``blocked``):
    it stays out where it is tissue or air, and is filled where its median voxel is partial
    volume, between the midpoint and a quarter lung (``edge_threshold``): the dome's cap seen
    through lung in a thick slice, which radiotherapy contours include. Holes closed in 3D
    (a nodule or mass inside the lung) are filled whatever their size.
    """
    threshold, edge_threshold = thresholds
    allowed = territory & ~blocked
    mask = allowed & (hu < threshold)
    size = filter_size(_CLOSING_RADIUS_MM, spacing)
    closed = ndimage.minimum_filter(ndimage.maximum_filter(mask.view(np.uint8), size=size), size=size) > 0
    mask |= closed & allowed
    max_hole_px = int(_MAX_AXIAL_HOLE_MM2 / (spacing[1] * spacing[2]))
    mask, open_holes = fill_holes_axial_rest(mask, max_hole_px, hu, thresholds)
    # A hole enclosed in 3D is made of axial holes left open: none left, nothing to look for.
    if open_holes is not None:
        mask = fill_holes_3d(mask, open_holes)
    return mask | (_in_plane_ring(mask, _EDGE_RING_MM, spacing) & allowed & (hu < edge_threshold))


def _in_plane_ring(mask: np.ndarray, radius_mm: float, spacing: Spacing) -> np.ndarray:
    """Voxels within ``radius_mm`` of ``mask`` in their own slice (none where pixels are larger)."""
    size = (1, *filter_size(radius_mm, spacing)[1:])
    return (ndimage.maximum_filter(mask.view(np.uint8), size=size) > 0) & ~mask


class LungThresholdEngine:
    """Left and right lung by threshold, airway removal and patient-coordinate naming."""

    name = ENGINE_NAME
    version = ENGINE_VERSION

    def segment(self, volume: Volume, targets: Sequence[str]) -> SegmentationResult:
        """Segment the requested lungs of ``volume`` (a CT in HU) on its own voxel grid.

        A tumour enclosed by lung is lung here; a known GTV is left out afterwards, for every
        engine alike (tools/segmentation/exclusion.py).
        """
        specs = resolve_targets(targets)
        unsupported = [s.key for s in specs if s.key not in _SUPPORTED]
        if unsupported:
            raise EngineError(
                f"{ENGINE_NAME} segments {', '.join(_SUPPORTED)} only, not {', '.join(unsupported)}; "
                "choose another engine for those structures."
            )
        started = time.perf_counter()
        series = volume.series_instance_uid
        canon = reorient(volume.geometry, "SPL")
        hu = canon.forward(volume.array)
        factors = working_factors(canon.spacing)
        work_spacing: Spacing = tuple(s * f for s, f in zip(canon.spacing, factors, strict=True))  # type: ignore[assignment]
        work = block_mean(hu, factors)

        air = work < _INITIAL_THRESHOLD_HU
        body = body_mask(air)
        # Airways and lungs are air inside the body: found within the body's in-plane box
        # (room air, table and padding around it are often half the grid), all slices kept
        # so that "the top of the scan" stays the same, then put back on the whole grid.
        roi = in_plane_box(body)
        body_r = body[roi]
        inside_air = air[roi] & body_r
        airway_r = airway_mask(inside_air, work[roi], body_r, work_spacing)
        lungs = select_lungs(inside_air & ~airway_r, work[roi], body_r, work_spacing)
        if lungs is None:
            raise EngineError(
                f"{ENGINE_NAME}: series {series} has no lung-like air region of at least {MIN_LUNG_ML:.0f} mL "
                "inside the body; check that the series is a CT covering the chest."
            )
        airway = np.zeros(work.shape, dtype=bool)
        airway[roi] = airway_r
        lungs.labels = _embed(lungs.labels, roi, work.shape)

        # Everything from here on happens near the lungs only.
        box_w = padded_box(lungs.labels > 0, _TERRITORY_STEPS + _RING_OUTER + 1)
        labels_w, work_w, air_w, airway_w = lungs.labels[box_w], work[box_w], air[box_w], airway[box_w]
        any_lung = labels_w > 0
        lung_median = float(np.median(work_w[any_lung]))
        tissue = _ring_median(work_w, any_lung, air_w)
        tissue = float(np.clip(tissue if tissue is not None else _SOFT_TISSUE_HU, *_TISSUE_RANGE_HU))
        threshold = (lung_median + tissue) / 2.0
        edge_threshold = lung_median + _EDGE_FRACTION * (tissue - lung_median)

        territory_w = _grow_labels(labels_w, _TERRITORY_STEPS, factors)
        airway_guard = dilate(airway_w)
        def refine(value: int) -> tuple[np.ndarray, Box | None]:
            # Written through the canonical view straight into the volume's layout: no copy back.
            full = np.zeros(volume.array.shape, dtype=bool)
            own_w = territory_w == value
            if not own_w.any():
                return full, None
            # Each lung is refined in its own box: half the voxels of both together.
            lung_w = padded_box(own_w, _CLOSING_PAD_W)
            box = tuple(
                slice((b.start + s.start) * f, min(n, (b.start + s.stop) * f))
                for b, s, f, n in zip(box_w, lung_w, factors, hu.shape, strict=True)
            )
            local = tuple(
                slice(s.start - b.start * f, s.stop - b.start * f) for b, s, f in zip(box_w, box, factors, strict=True)
            )
            canon.forward(full)[box] = _refine(
                hu[box],
                upsample(own_w, factors, local),
                upsample(airway_guard, factors, local),
                (threshold, edge_threshold),
                canon.spacing,
            )
            return full, _source_box(canon, box)

        # One thread per lung: scipy's filters and numpy's array operations release the GIL.
        with ThreadPoolExecutor(max_workers=2) as pool:
            refined = list(pool.map(refine, (1, 2)))
        masks = [mask for mask, _ in refined]
        source_boxes = [box for _, box in refined]

        by_side = _assign_sides(masks, source_boxes, volume)
        confidences = {}
        for value, mask in zip((1, 2), masks, strict=True):
            key = "left-lung" if mask is by_side["left-lung"] else "right-lung"
            own = labels_w == value
            ring = _ring_median(work_w, own, air_w)
            own_median = float(np.median(work_w[own])) if own.any() else 0.0
            contrast = (ring - own_median) if ring is not None else 0.0
            penalty = _SPLIT_PENALTY if lungs.cut_at_midline else 1.0
            confidences[key] = round(float(np.clip(contrast / _EXPECTED_CONTRAST_HU, 0.0, 1.0)) * penalty, 3)

        if any(spec.key == "body" for spec in specs):
            by_side["body"] = canon.backward(body_outline(hu, air, factors, work_spacing, _INITIAL_THRESHOLD_HU))
            # The skin against room air is the sharpest edge on CT: nothing here is a guess.
            confidences["body"] = 1.0
        structures = [
            StructureMask(structure=spec, mask=by_side[spec.key], confidence=confidences[spec.key]) for spec in specs
        ]
        seconds = time.perf_counter() - started
        logger.info(
            "%s segmented series %s in %.2f s (working grid %s mm, threshold %.0f HU, lungs cut at the midline: %s)",
            ENGINE_NAME, series, seconds, tuple(round(s, 2) for s in work_spacing), threshold, lungs.cut_at_midline,
        )
        return SegmentationResult(
            engine=ENGINE_NAME,
            engine_version=ENGINE_VERSION,
            structures=structures,
            seconds=seconds,
            parameters=_parameters(work_spacing, threshold, edge_threshold),
        )


def _parameters(work_spacing: Spacing, threshold: float, edge_threshold: float) -> dict[str, str]:
    """The fixed settings and the thresholds measured on this CT, as the SR and SEG name them.

    Measured values are rounded to 0.1 HU: they are fixed by the CT, and the rounding keeps the
    text the same on every machine.
    """
    return {
        "air_threshold_hu": f"{_INITIAL_THRESHOLD_HU:g}",
        "lung_threshold_hu": f"{round(threshold, 1):g}",
        "edge_threshold_hu": f"{round(edge_threshold, 1):g}",
        "min_lung_ml": f"{MIN_LUNG_ML:g}",
        "closing_radius_mm": f"{_CLOSING_RADIUS_MM:g}",
        "max_axial_hole_mm2": f"{_MAX_AXIAL_HOLE_MM2:g}",
        "working_spacing_mm": "x".join(f"{round(s, 3):g}" for s in work_spacing),
    }


def _source_box(canon: Reorientation, box: Box) -> Box:
    """``box`` of the canonical view as the same voxels' box in the source array."""
    source: list[slice] = [slice(None)] * 3
    for axis, (part, n) in enumerate(zip(box, canon.shape, strict=True)):
        start, stop, _ = part.indices(n)
        source[canon.perm[axis]] = slice(n - stop, n - start) if canon.flip[axis] else slice(start, stop)
    return tuple(source)  # type: ignore[return-value]


def _assign_sides(masks: list[np.ndarray], boxes: list[Box | None], volume: Volume) -> dict[str, np.ndarray]:
    """Name the two masks by their centroid's patient x (LPS: +x is the patient's left).

    ``boxes``: where each mask can have voxels (None: nowhere). With one lung found, it is
    named by which side of the body centre it lies.
    """
    xs: list[float | None] = []
    for mask, box in zip(masks, boxes, strict=True):
        if box is None or not mask[box].any():
            xs.append(None)
            continue
        xs.append(centroid_x(mask, volume.geometry, box))
    if xs[0] is not None and xs[1] is not None:
        first_is_left = xs[0] >= xs[1]
    else:
        found = 0 if xs[0] is not None else 1
        centre = volume.geometry.index_to_patient(np.array([(n - 1) / 2.0 for n in volume.array.shape[::-1]]))
        x = xs[found]
        first_is_left = (x is not None and x >= float(centre[0])) == (found == 0)
    left, right = (masks[0], masks[1]) if first_is_left else (masks[1], masks[0])
    return {"left-lung": left, "right-lung": right}
