"""Engine `lung-threshold`: classical left/right lung segmentation of a CT volume, no weights.

Everything runs in a canonical view of the volume (axes superior, posterior, patient-left;
see :class:`_Canonical`), with sizes given in millimetres and converted per axis, so any
pixel spacing, slice order (head-first, feet-first) and axis-aligned orientation works.
The topology is worked out on a working grid of about 1.4 mm (block means of the HU):

1. Air: below -400 HU, the midpoint between aerated lung (about -850) and soft tissue.
2. Body: the largest non-air 3D component, axial holes filled. Air outside it (room air,
   the table's hollow core, padding outside the reconstruction circle) is never lung.
3. Airways: the trachea is a small, round, pure-air section near the body's midline in the
   top slices; the airway tree is grown from it through lumen air (below the midpoint of
   air and lung), lowering that threshold if the growth leaks, and widened by its wall's
   partial volume. Removing it disconnects the lungs at the carina.
4. Lungs: the two largest remaining air regions that are not pure gas (bowel and stomach
   gas sit near -1000 HU, lung tissue does not). A region lying on both sides of the
   body's midline is two lungs touching at a junction line: it is split at its narrowest
   junction (watershed of the distance map from two cores).
5. Full resolution, per lung: the threshold becomes the midpoint between the lungs' median
   HU and the tissue around them (the partial-volume boundary); a 3 mm closing takes in
   vessels touching the pleura; axial holes up to a vessel or bronchus section are filled,
   as are holes enclosed in 3D (nodules, masses). The dome of the diaphragm rising into a
   slice is a larger axial hole and stays out. Main bronchi and trachea stay out where they
   are not surrounded by lung.
6. Left and right come from patient coordinates via the DICOM geometry (LPS: larger x is
   the patient's left, PS3.3 C.7.6.2.1.1), never from array order.

Confidence (per lung, in [0, 1]): the HU contrast at the lung's edge relative to that of
aerated lung against soft tissue, ``(median HU of the tissue 1-3 working voxels outside
the lung - median HU of the lung) / 800 HU``, clipped. Clean lung against chest wall and
mediastinum scores 0.95-1.0; lung whose edge runs through consolidation, effusion or
ground glass, where the threshold had to guess, scores lower. It is multiplied by 0.8
when joined lungs showed no narrowing and had to be cut at the body's midline.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from agent.settings import Settings
from tools.imaging.volume import Volume
from tools.segmentation.base import (
    EngineError,
    SegmentationResult,
    StructureMask,
    resolve_targets,
)
from tools.segmentation.qa import qa_flags

logger = logging.getLogger(__name__)

ENGINE_NAME = "lung-threshold"
ENGINE_VERSION = "1.0.0"

_SUPPORTED = ("left-lung", "right-lung")
# Midpoint between aerated lung (~-850 HU) and soft tissue (~+40 HU): where a voxel is half
# lung by partial volume. Used to find the regions; the final threshold is measured.
_INITIAL_THRESHOLD_HU = -400.0
_SOFT_TISSUE_HU = 40.0
# The tissue around the lungs is fat (-100) to muscle (+60); outside that the ring sampled
# something else (bone, contrast) and the fixed value is the better estimate.
_TISSUE_RANGE_HU = (-150.0, 100.0)
_EXPECTED_CONTRAST_HU = 800.0
# Pure gas (bowel, stomach): most voxels below this. Even emphysematous lung stays above.
_GAS_HU = -950.0
# Topology is worked out on a grid of about this spacing (block means); only the final
# threshold, closing and hole filling run at full resolution.
_WORKING_SPACING_MM = 1.4
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
_MIN_LUNG_ML = 15.0
# One region with this share of its voxels on each side of the body midline is two lungs joined.
_JOINED_SIDE_FRACTION = 0.2
_THIN_JUNCTION_STEPS = 4
_SPLIT_STEP_MM = 1.5
_SPLIT_MIN_CORE_FRACTION = 0.1
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
# Largest axial hole filled: a hilar vessel or a bronchus with its wall (about 25 mm across).
_MAX_AXIAL_HOLE_MM2 = 500.0


@dataclass(frozen=True)
class _Canonical:
    """How to view a (slices, rows, columns) array as (superior, posterior, left) axes.

    ``perm[a]`` is the array axis that becomes canonical axis ``a``; ``flip[a]`` says
    whether it runs the other way. Only axis swaps and flips are used (no resampling):
    for an oblique series the nearest patient axis is taken, which is all morphology needs.
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    spacing: tuple[float, float, float]

    @classmethod
    def from_volume(cls, volume: Volume) -> _Canonical:
        geometry = volume.geometry
        # Array axis 0 runs along direction[2] (slices), axis 1 along direction[1] (rows),
        # axis 2 along direction[0] (columns).
        axis_dirs = np.asarray([geometry.direction[2], geometry.direction[1], geometry.direction[0]], dtype=float)
        axis_spacing = (geometry.spacing[2], geometry.spacing[1], geometry.spacing[0])
        # Canonical axis a looks along LPS component (z, y, x)[a].
        lps_component = (2, 1, 0)
        best = max(
            itertools.permutations(range(3)),
            key=lambda p: sum(abs(axis_dirs[p[a], lps_component[a]]) for a in range(3)),
        )
        flip = tuple(bool(axis_dirs[best[a], lps_component[a]] < 0) for a in range(3))
        spacing = tuple(float(axis_spacing[best[a]]) for a in range(3))
        return cls(perm=tuple(best), flip=flip, spacing=spacing)  # type: ignore[arg-type]

    def forward(self, array: np.ndarray) -> np.ndarray:
        view = np.transpose(array, self.perm)
        return view[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]

    def backward(self, array: np.ndarray) -> np.ndarray:
        unflipped = array[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]
        return np.ascontiguousarray(np.transpose(unflipped, np.argsort(self.perm)))


_SLICE_2D = np.zeros((3, 3, 3), dtype=bool)
_SLICE_2D[1] = ndimage.generate_binary_structure(2, 2)
_SLICE_2D_4 = np.zeros((3, 3, 3), dtype=bool)
_SLICE_2D_4[1] = ndimage.generate_binary_structure(2, 1)

Spacing = tuple[float, float, float]


def _working_factors(spacing: Spacing) -> tuple[int, int, int]:
    """Integer block sizes that bring each axis to about ``_WORKING_SPACING_MM``."""
    return tuple(max(1, int(round(_WORKING_SPACING_MM / s))) for s in spacing)  # type: ignore[return-value]


def _block_mean(hu: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Average HU over blocks of ``factors`` voxels (edges padded by repetition)."""
    pad = [(0, (-n) % f) for n, f in zip(hu.shape, factors, strict=True)]
    data = np.pad(hu, pad, mode="edge") if any(p[1] for p in pad) else hu
    fz, fy, fx = factors
    out = np.zeros(tuple(n // f for n, f in zip(data.shape, factors, strict=True)), dtype=np.float32)
    for dz, dy, dx in itertools.product(range(fz), range(fy), range(fx)):
        out += data[dz::fz, dy::fy, dx::fx]
    out /= float(fz * fy * fx)
    return out


def _upsample(labels: np.ndarray, factors: tuple[int, int, int], box: tuple[slice, slice, slice]) -> np.ndarray:
    """Nearest-neighbour labels of the full-resolution voxels in ``box`` from the working grid."""
    index = np.ix_(*(np.arange(s.start, s.stop) // f for s, f in zip(box, factors, strict=True)))
    return labels[index]


def _fill_holes_axial(mask: np.ndarray, max_area_px: int | None = None) -> np.ndarray:
    """Fill holes in every axial slice: background not 4-connected to the slice border.

    With ``max_area_px``, only holes up to that many pixels are filled.
    """
    labels, _ = ndimage.label(~mask, structure=_SLICE_2D_4)
    fill = np.ones(int(labels.max()) + 1, dtype=bool)
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        fill[edge] = False
    if max_area_px is not None:
        fill &= np.bincount(labels.ravel(), minlength=fill.size) <= max_area_px
    fill[0] = False
    return mask | fill[labels]


def _fill_holes_3d(mask: np.ndarray) -> np.ndarray:
    """Fill background regions enclosed in 3D (a nodule or mass surrounded by lung)."""
    labels, _ = ndimage.label(~mask)
    fill = np.ones(int(labels.max()) + 1, dtype=bool)
    for axis in range(3):
        for end in (0, -1):
            fill[np.take(labels, end, axis=axis)] = False
    fill[0] = False
    return mask | fill[labels]


def _box(radius_mm: float, spacing: Spacing) -> tuple[int, int, int]:
    """Filter size covering +-radius_mm along each axis (at least the voxel itself)."""
    return tuple(2 * int(round(radius_mm / s)) + 1 for s in spacing)  # type: ignore[return-value]


def _body_mask(air: np.ndarray) -> np.ndarray:
    """The patient: the largest non-air component with its axial holes filled."""
    labels, count = ndimage.label(~air)
    if count == 0:
        return np.zeros_like(air)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return _fill_holes_axial(labels == int(np.argmax(sizes)))


def _find_trachea(inside_air: np.ndarray, work: np.ndarray, body: np.ndarray, spacing: Spacing) -> np.ndarray | None:
    """The trachea's section in the top slices: small, round, pure air, near the body's midline.

    Returns a mask of that section (in the full working array) or None when there is none, as
    in a scan of the lung bases or the abdomen.
    """
    sz, sy, sx = spacing
    top = inside_air.shape[0]
    first = max(0, top - 1 - int(round(_TRACHEA_SEARCH_DEPTH_MM / sz)))
    labels, _ = ndimage.label(inside_air[first:], structure=_SLICE_2D)
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


def _airway_mask(inside_air: np.ndarray, work: np.ndarray, body: np.ndarray, spacing: Spacing) -> np.ndarray:
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
        labels, _ = ndimage.label(lumen)
        hit = np.unique(labels[seed & lumen])
        hit = hit[hit > 0]
        grown = np.isin(labels, hit) if hit.size else seed
        if np.count_nonzero(grown) * voxel_ml <= _AIRWAY_MAX_ML:
            region = grown | seed
            break
        threshold -= _AIRWAY_LEAK_STEP_HU
    else:
        logger.warning("airway growth leaked at every threshold down to %.0f HU; only the trachea section is removed", threshold)
    wall = ndimage.maximum_filter(region.view(np.uint8), size=_box(_AIRWAY_WALL_MM, spacing)) > 0
    return wall & inside_air


@dataclass
class _Lungs:
    labels: np.ndarray
    """working grid: 0 background, 1 and 2 the lungs (in no particular side order)"""
    cut_at_midline: bool
    """joined lungs with no narrowing to split at, cut at the body's midline plane instead"""


def _select_lungs(candidates: np.ndarray, work: np.ndarray, body: np.ndarray, spacing: Spacing, series: str) -> _Lungs:
    """The two lungs among the air regions inside the body (bowel gas and small pockets out)."""
    labels, count = ndimage.label(candidates)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    # Gas is pure air: most of its voxels sit near -1000 HU. Lung tissue keeps the median higher.
    gas_like = np.bincount(labels[work < _GAS_HU].ravel(), minlength=count + 1) > 0.5 * sizes
    order = [int(i) for i in np.argsort(sizes[1:])[::-1] + 1]
    lung_like = [i for i in order if sizes[i] * voxel_ml >= _MIN_LUNG_ML and not gas_like[i]]
    if not lung_like:
        raise EngineError(
            f"{ENGINE_NAME}: series {series} has no lung-like air region of at least {_MIN_LUNG_ML:.0f} mL "
            "inside the body; check that the series is a CT covering the chest."
        )
    first = labels == lung_like[0]
    out = np.zeros(labels.shape, dtype=np.uint8)
    if _spans_midline(first, body):
        split, cut = _split(first, spacing, body)
        return _Lungs(labels=split, cut_at_midline=cut)
    out[first] = 1
    if len(lung_like) > 1:
        out[labels == lung_like[1]] = 2
    return _Lungs(labels=out, cut_at_midline=False)


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
    for steps in range(1, _THIN_JUNCTION_STEPS + 1):
        cores, count = ndimage.label(ndimage.binary_erosion(sub, structure=_SLICE_2D_4, iterations=steps))
        markers = _two_cores(cores, count)
        if markers is not None:
            out[box] = _grow_inside(markers, sub, steps)
            return out, False
    distance = ndimage.distance_transform_edt(sub, sampling=spacing)
    for depth in np.arange(_SPLIT_STEP_MM, float(distance.max()), _SPLIT_STEP_MM):
        cores, count = ndimage.label(distance > depth)
        markers = _two_cores(cores, count)
        if markers is not None:
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
    markers = np.zeros(cores.shape, dtype=np.int32)
    markers[cores == first] = 1
    markers[cores == second] = 2
    return markers


def _grow_inside(markers: np.ndarray, region: np.ndarray, steps: int) -> np.ndarray:
    """Undo an in-plane erosion of ``steps`` layers: grow markers 1 and 2 back through ``region``.

    Sections the erosion removed entirely (an apex or base tip) go to the lung on their
    side of the plane halfway between the two lungs' mean columns.
    """
    out = markers.astype(np.uint8)
    for _ in range(steps + 1):
        free = region & (out == 0)
        grown = [ndimage.binary_dilation(out == value, structure=_SLICE_2D_4) & free for value in (1, 2)]
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


def _grow_labels(labels: np.ndarray, steps: int, factors: tuple[int, int, int]) -> np.ndarray:
    """Let labels 1 and 2 grow ``steps`` voxels; where both arrive, neither takes the voxel.

    They grow in-plane always (room for the closing and the partial-volume edge) and along
    the slice axis only where working voxels span several slices: a thick slice is the
    same at both resolutions, and growing through it would reach the abdomen's gas.
    """
    structure = ndimage.generate_binary_structure(3, 1)
    if factors[0] == 1:
        structure[0] = structure[2] = False
    grown = [ndimage.binary_dilation(labels == value, structure=structure, iterations=steps) for value in (1, 2)]
    out = labels.copy()
    free = labels == 0
    out[free & grown[0] & ~grown[1]] = 1
    out[free & grown[1] & ~grown[0]] = 2
    return out


def _padded_box(mask: np.ndarray, pad: int) -> tuple[slice, slice, slice]:
    box = ndimage.find_objects(mask.view(np.uint8))[0]
    return tuple(slice(max(0, s.start - pad), min(n, s.stop + pad)) for s, n in zip(box, mask.shape, strict=True))  # type: ignore[return-value]


def _ring_median(work: np.ndarray, mask: np.ndarray, exclude: np.ndarray) -> float | None:
    """Median HU of the tissue ``_RING_INNER``..``_RING_OUTER`` working voxels outside ``mask``.

    Voxels in ``exclude`` (air: other lung, airways, outside) are not tissue and are left out.
    """
    near = ndimage.binary_dilation(mask, iterations=_RING_INNER)
    far = ndimage.binary_dilation(near, iterations=_RING_OUTER - _RING_INNER)
    ring = far & ~near & ~exclude
    return float(np.median(work[ring])) if ring.any() else None


def _refine(hu: np.ndarray, territory: np.ndarray, blocked: np.ndarray, threshold: float, spacing: Spacing) -> np.ndarray:
    """One lung at full resolution: threshold inside its territory, close, fill holes.

    Axial holes are filled up to the size of a vessel or bronchus section: a larger one is
    the dome of the diaphragm rising into the slice, not lung. Holes closed in 3D (a nodule
    or mass inside the lung) are filled whatever their size.
    """
    mask = territory & (hu < threshold) & ~blocked
    size = _box(_CLOSING_RADIUS_MM, spacing)
    closed = ndimage.minimum_filter(ndimage.maximum_filter(mask.view(np.uint8), size=size), size=size) > 0
    mask |= closed & territory & ~blocked
    max_hole_px = int(_MAX_AXIAL_HOLE_MM2 / (spacing[1] * spacing[2]))
    return _fill_holes_3d(_fill_holes_axial(mask, max_hole_px))


class LungThresholdEngine:
    """Left and right lung by threshold, airway removal and patient-coordinate naming."""

    name = ENGINE_NAME
    version = ENGINE_VERSION

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings

    def segment(self, volume: Volume, targets: Sequence[str]) -> SegmentationResult:
        """Segment the requested lungs of ``volume`` (a CT in HU) on its own voxel grid."""
        specs = resolve_targets(targets)
        unsupported = [s.key for s in specs if s.key not in _SUPPORTED]
        if unsupported:
            raise EngineError(
                f"{ENGINE_NAME} segments {', '.join(_SUPPORTED)} only, not {', '.join(unsupported)}; "
                "choose another engine for those structures."
            )
        started = time.perf_counter()
        series = volume.series_instance_uid
        canon = _Canonical.from_volume(volume)
        hu = canon.forward(volume.array)
        factors = _working_factors(canon.spacing)
        work_spacing: Spacing = tuple(s * f for s, f in zip(canon.spacing, factors, strict=True))  # type: ignore[assignment]
        work = _block_mean(hu, factors)

        air = work < _INITIAL_THRESHOLD_HU
        body = _body_mask(air)
        inside_air = air & body
        airway = _airway_mask(inside_air, work, body, work_spacing)
        lungs = _select_lungs(inside_air & ~airway, work, body, work_spacing, series)

        # Everything from here on happens near the lungs only.
        box_w = _padded_box(lungs.labels > 0, _TERRITORY_STEPS + _RING_OUTER + 1)
        labels_w, work_w, air_w, airway_w = lungs.labels[box_w], work[box_w], air[box_w], airway[box_w]
        any_lung = labels_w > 0
        lung_median = float(np.median(work_w[any_lung]))
        tissue = _ring_median(work_w, any_lung, air_w)
        tissue = float(np.clip(tissue if tissue is not None else _SOFT_TISSUE_HU, *_TISSUE_RANGE_HU))
        threshold = (lung_median + tissue) / 2.0

        territory_w = _grow_labels(labels_w, _TERRITORY_STEPS, factors)
        airway_guard = ndimage.binary_dilation(airway_w)
        masks: list[np.ndarray] = []
        for value in (1, 2):
            full = np.zeros(hu.shape, dtype=bool)
            own_w = territory_w == value
            if own_w.any():
                # Each lung is refined in its own box: half the voxels of both together.
                lung_w = _padded_box(own_w, _CLOSING_PAD_W)
                box = tuple(
                    slice((b.start + s.start) * f, min(n, (b.start + s.stop) * f))
                    for b, s, f, n in zip(box_w, lung_w, factors, hu.shape, strict=True)
                )
                local = tuple(
                    slice(s.start - b.start * f, s.stop - b.start * f) for b, s, f in zip(box_w, box, factors, strict=True)
                )
                full[box] = _refine(
                    hu[box],
                    _upsample(own_w, factors, local),
                    _upsample(airway_guard, factors, local),
                    threshold,
                    canon.spacing,
                )
            masks.append(canon.backward(full))

        by_side = _assign_sides(masks, volume)
        confidences = {}
        for value, mask in zip((1, 2), masks, strict=True):
            key = "left-lung" if mask is by_side["left-lung"] else "right-lung"
            own = labels_w == value
            ring = _ring_median(work_w, own, air_w)
            own_median = float(np.median(work_w[own])) if own.any() else 0.0
            contrast = (ring - own_median) if ring is not None else 0.0
            penalty = _SPLIT_PENALTY if lungs.cut_at_midline else 1.0
            confidences[key] = round(float(np.clip(contrast / _EXPECTED_CONTRAST_HU, 0.0, 1.0)) * penalty, 3)

        structures = [
            StructureMask(structure=spec, mask=by_side[spec.key], confidence=confidences[spec.key]) for spec in specs
        ]
        flags = qa_flags(volume, structures)
        for item in structures:
            item.flags = [f for f in flags if f.structure == item.structure.key]
        seconds = time.perf_counter() - started
        logger.info(
            "%s segmented series %s in %.2f s (working grid %s mm, threshold %.0f HU, lungs cut at the midline: %s)",
            ENGINE_NAME, series, seconds, tuple(round(s, 2) for s in work_spacing), threshold, lungs.cut_at_midline,
        )
        return SegmentationResult(
            engine=ENGINE_NAME,
            engine_version=ENGINE_VERSION,
            structures=structures,
            flags=[f for f in flags if f.structure is None],
            seconds=seconds,
        )


def _centroid(mask: np.ndarray) -> tuple[float, float, float]:
    """Mean (slice, row, column) index of a non-empty mask, from its projections (fast)."""
    total = float(np.count_nonzero(mask))
    out = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        counts = np.count_nonzero(mask, axis=others)
        out.append(float(counts @ np.arange(counts.size)) / total)
    return out[0], out[1], out[2]


def _assign_sides(masks: list[np.ndarray], volume: Volume) -> dict[str, np.ndarray]:
    """Name the two masks by their centroid's patient x (LPS: +x is the patient's left).

    With one lung found, it is named by which side of the body centre it lies.
    """
    xs: list[float | None] = []
    for mask in masks:
        if not mask.any():
            xs.append(None)
            continue
        k, r, c = _centroid(mask)
        xs.append(float(volume.geometry.index_to_patient(np.array([c, r, k]))[0]))
    if xs[0] is not None and xs[1] is not None:
        first_is_left = xs[0] >= xs[1]
    else:
        found = 0 if xs[0] is not None else 1
        centre = volume.geometry.index_to_patient(np.array([(n - 1) / 2.0 for n in volume.array.shape[::-1]]))
        x = xs[found]
        first_is_left = (x is not None and x >= float(centre[0])) == (found == 0)
    left, right = (masks[0], masks[1]) if first_is_left else (masks[1], masks[0])
    return {"left-lung": left, "right-lung": right}
