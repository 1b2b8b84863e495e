"""QA flags for lung masks on a diseased chest: what a reviewer should look at, and where.

`lung_flags` is called by `tools.segmentation.qa.qa_flags` for the lung structures. Each
flag names the patient z range (mm) and, on an axial series, the slice numbers to jump to:

- ``dense-excluded`` / ``dense-included``: dense tissue (tumour, atelectasis,
  consolidation: above ``DENSE_HU``) of at least ``DENSE_FLAG_ML`` left out of the lung
  inside its pleural envelope (the lung closed in-plane by ``ENVELOPE_MM``, so concavities
  of the pleural surface that a tumour or collapse fills count, the mediastinum beyond
  them does not), or held inside the lung mask.
- ``lung-length-mismatch``: the apices or the bases of the two lungs end more than
  ``APEX_MISMATCH_MM`` / ``BASE_MISMATCH_MM`` apart in z (part of one lung missed, or a
  collapsed lobe).
- ``lung-volume-ratio``: left / right volume outside ``VOLUME_RATIO_RANGE`` (the left lung
  holds about 45 % of the total in adults).
- ``pleural-effusion-suspected``: fluid-density tissue (``FLUID_HU``) of at least
  ``EFFUSION_FLAG_ML`` lying behind a lung (dependent, between lung and posterior chest
  wall), within ``EFFUSION_RIM_MM`` of it.

Everything runs on a coarse grid of about ``COARSE_MM`` (block means of the HU, a lung
voxel where at least half the block is lung) in the canonical view (superior, posterior,
patient-left axes; tools/imaging/orientation.py), which keeps it well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tools.imaging.blocks import block_mean
from tools.imaging.orientation import Reorientation, array_axis_spacing, reorient
from tools.imaging.volume import Volume
from tools.segmentation.base import FlagPlanes, QAFlag, StructureMask

COARSE_MM = 3.0
# Consolidation, atelectasis and tumour sit at -100..+60 HU; aerated lung near -850 and
# ground glass down to about -300 (partial volume of a 3 mm block included).
DENSE_HU = -300.0
# A lung mask whose median is above this holds no aerated lung to compare with.
AERATED_MAX_HU = -500.0
ENVELOPE_MM = 15.0
DENSE_FLAG_ML = 10.0
# Apices end at about the same height; the right hemidiaphragm sits up to ~3 cm higher.
APEX_MISMATCH_MM = 20.0
BASE_MISMATCH_MM = 45.0
VOLUME_RATIO_RANGE = (0.6, 1.15)
# Simple fluid (effusion) is 0-20 HU; muscle and blood are 35-60 HU (image noise widens both).
FLUID_HU = (-10.0, 25.0)
EFFUSION_RIM_MM = 15.0
EFFUSION_FLAG_ML = 40.0
_FLUID_BLOCK_FRACTION = 0.6
_IN_PLANE_CROSS = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_CROSS[1] = ndimage.generate_binary_structure(2, 1)
_LUNG_KEYS = ("left-lung", "right-lung")


@dataclass
class _Coarse:
    """The volume around the lungs (``box`` of the source array) on the coarse grid, canonical view."""

    canon: Reorientation
    """the canonical view of the cropped source array"""
    box: tuple[slice, slice, slice]
    factors: tuple[int, int, int]
    spacing: tuple[float, float, float]
    hu: np.ndarray
    fluid: np.ndarray
    """share of each block's voxels at fluid density (``FLUID_HU``)"""
    lungs: dict[str, np.ndarray]
    volume: Volume

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def planes(self, levels: np.ndarray) -> FlagPlanes:
        """The source array planes covering coarse canonical levels (axis 0 indices)."""
        lo, hi = int(levels.min()), int(levels.max())
        f = self.factors[0]
        view = (lo * f, min(self.canon.shape[0], (hi + 1) * f) - 1)
        axis = self.canon.perm[0]
        first, last = sorted(self.canon.view_index(0, v) + self.box[axis].start for v in view)
        return FlagPlanes(axis=axis, first=first, last=last)

    def where(self, levels: np.ndarray) -> str:
        """'z a to b mm (slices i-j of n)' for coarse canonical levels (axis 0 indices)."""
        planes = self.planes(levels)
        axis = planes.axis
        source = [planes.first, planes.last]
        z = [self._z(axis, index) for index in source]
        text = f"z {min(z):.0f} to {max(z):.0f} mm"
        if axis == 0:  # an axial series: the levels are its slices (numbered from 1)
            text += f" (slices {source[0] + 1}-{source[1] + 1} of {self.volume.array.shape[0]})"
        return text

    def _z(self, axis: int, source_index: int) -> float:
        index = [float(self.box[2].start), float(self.box[1].start), float(self.box[0].start)]  # (column, row, slice)
        index[2 - axis] = float(source_index)
        return float(self.volume.geometry.index_to_patient(np.array(index))[2])


def lung_flags(volume: Volume, structures: list[StructureMask]) -> list[QAFlag]:
    """The lung QA flags for the non-empty lung masks among ``structures``."""
    lungs = {s.structure.key: s for s in structures if s.structure.key in _LUNG_KEYS and s.mask.any()}
    if not lungs:
        return []
    coarse = _coarsen(volume, {key: item.mask for key, item in lungs.items()})
    flags: list[QAFlag] = []
    for key, item in lungs.items():
        # Density checks need aerated lung around them: a mask whose median is not lung
        # (a collapsed lung, a wrong series) is flagged by its volume, not here.
        if not _aerated(coarse, key):
            continue
        name = item.structure.display
        flags += _dense_flags(coarse, key, name)
        flags += _effusion_flags(coarse, key, name)
    if len(lungs) == 2:
        complete = all(not _touches_z_edge(m) for m in coarse.lungs.values())
        flags += _length_flags(coarse, lungs)
        if complete:
            flags += _ratio_flags(coarse, lungs, volume)
    return flags


def _aerated(coarse: _Coarse, key: str) -> bool:
    lung = coarse.lungs[key]
    return bool(lung.any()) and float(np.median(coarse.hu[lung])) <= AERATED_MAX_HU


def _coarsen(volume: Volume, masks: dict[str, np.ndarray]) -> _Coarse:
    """The coarse canonical view of the lungs' box, grown by the farthest reach of any check."""
    union = np.zeros(volume.array.shape, dtype=bool)
    for mask in masks.values():
        union |= mask
    pad = max(ENVELOPE_MM, EFFUSION_RIM_MM) + 2 * COARSE_MM
    found = ndimage.find_objects(union.view(np.uint8))[0]
    box = tuple(
        slice(max(0, b.start - int(np.ceil(pad / s))), min(n, b.stop + int(np.ceil(pad / s))))
        for b, s, n in zip(found, array_axis_spacing(volume.geometry), union.shape, strict=True)
    )
    shape = tuple(b.stop - b.start for b in box)
    canon = reorient(volume.geometry.model_copy(update={"shape": shape}), "SPL")
    factors = tuple(max(1, int(round(COARSE_MM / s))) for s in canon.spacing)
    spacing = tuple(s * f for s, f in zip(canon.spacing, factors, strict=True))
    source = np.ascontiguousarray(canon.forward(volume.array[box]))
    hu = block_mean(source, factors)
    fluid = block_mean((source >= FLUID_HU[0]) & (source <= FLUID_HU[1]), factors)
    lungs = {key: block_mean(np.ascontiguousarray(canon.forward(mask[box])), factors) >= 0.5 for key, mask in masks.items()}
    return _Coarse(canon, box, factors, spacing, hu, fluid, lungs, volume)  # type: ignore[arg-type]


def _in_plane_size(radius_mm: float, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    return (1, 2 * int(round(radius_mm / spacing[1])) + 1, 2 * int(round(radius_mm / spacing[2])) + 1)


def _components(mask: np.ndarray, min_ml: float, voxel_ml: float) -> list[np.ndarray]:
    """Boolean masks of the 26-connected components of at least ``min_ml``, largest first."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:] * voxel_ml
    return [labels == i + 1 for i in np.argsort(sizes)[::-1] if sizes[i] >= min_ml]


def _levels(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask.any(axis=(1, 2)))


def _dense_flags(coarse: _Coarse, key: str, name: str) -> list[QAFlag]:
    lung = coarse.lungs[key]
    others = np.zeros_like(lung)
    for other_key, other in coarse.lungs.items():
        if other_key != key:
            others |= other
    dense = coarse.hu > DENSE_HU
    size = _in_plane_size(ENVELOPE_MM, coarse.spacing)
    pad = [(0, 0), (size[1], size[1]), (size[2], size[2])]
    closed = ndimage.minimum_filter(ndimage.maximum_filter(np.pad(lung, pad).view(np.uint8), size=size), size=size) > 0
    envelope = closed[:, size[1] : -size[1], size[2] : -size[2]]
    flags: list[QAFlag] = []
    # Opened like the included tissue below: vessels and bronchial walls at the hilum are thin.
    solid_out = ndimage.binary_opening(envelope & ~lung & ~others & dense, structure=ndimage.generate_binary_structure(3, 1))
    for region in _components(solid_out, DENSE_FLAG_ML, coarse.voxel_ml):
        ml = np.count_nonzero(region) * coarse.voxel_ml
        flags.append(QAFlag(
            code="dense-excluded", severity="warning", structure=key,
            message=f"{name}: {ml:.0f} mL of dense tissue (over {DENSE_HU:.0f} HU) within the lung's pleural "
            f"envelope is left out, at {coarse.where(_levels(region))}. Check whether it is collapsed or "
            "consolidated lung (include it) or tumour, effusion or mediastinum (leave it out).",
            planes=coarse.planes(_levels(region)),
        ))
    # Vessels inside the lung are thin: an opening by one coarse voxel keeps only masses.
    solid = ndimage.binary_opening(lung & dense, structure=ndimage.generate_binary_structure(3, 1))
    for region in _components(solid, DENSE_FLAG_ML, coarse.voxel_ml):
        ml = np.count_nonzero(region) * coarse.voxel_ml
        flags.append(QAFlag(
            code="dense-included", severity="warning", structure=key,
            message=f"{name}: the mask holds {ml:.0f} mL of dense tissue (over {DENSE_HU:.0f} HU) at "
            f"{coarse.where(_levels(region))}. Check whether it is tumour (radiotherapy lungs leave the GTV "
            "out) or collapsed or consolidated lung (keep it).",
            planes=coarse.planes(_levels(region)),
        ))
    return flags


def _effusion_flags(coarse: _Coarse, key: str, name: str) -> list[QAFlag]:
    lung = coarse.lungs[key]
    # Most of the block's voxels at fluid density (a mean would also find fat-muscle mixtures),
    # in a layer at least two blocks thick (intercostal muscle and pleura are thinner).
    fluid = ndimage.binary_opening(coarse.fluid >= _FLUID_BLOCK_FRACTION, structure=_IN_PLANE_CROSS)
    rim = (ndimage.maximum_filter(lung.view(np.uint8), size=_in_plane_size(EFFUSION_RIM_MM, coarse.spacing)) > 0) & ~lung
    # Dependent (supine: posterior) to the lung: lung lies in front of it in the same column.
    behind = np.maximum.accumulate(lung, axis=1) & ~lung
    flags: list[QAFlag] = []
    for region in _components(fluid & rim & behind, EFFUSION_FLAG_ML, coarse.voxel_ml):
        ml = np.count_nonzero(region) * coarse.voxel_ml
        flags.append(QAFlag(
            code="pleural-effusion-suspected", severity="warning", structure=key,
            message=f"{name}: {ml:.0f} mL of fluid-density tissue ({FLUID_HU[0]:.0f} to {FLUID_HU[1]:.0f} HU) lies "
            f"behind the lung at {coarse.where(_levels(region))}: a pleural effusion is suspected. Effusion is "
            "not lung; check that the mask stops at the lung and that the compressed lung above it is included.",
            planes=coarse.planes(_levels(region)),
        ))
    return flags


def _touches_z_edge(mask: np.ndarray) -> bool:
    levels = _levels(mask)
    return levels.size == 0 or levels[0] == 0 or levels[-1] == mask.shape[0] - 1


def _length_flags(coarse: _Coarse, lungs: dict[str, StructureMask]) -> list[QAFlag]:
    """Apex and base heights compared, each only where neither lung is cut by the scan there."""
    spans = {key: _levels(mask) for key, mask in coarse.lungs.items()}
    left, right = spans["left-lung"], spans["right-lung"]
    if left.size == 0 or right.size == 0:  # a lung smaller than a coarse block: its volume flags say it
        return []
    last = coarse.lungs["left-lung"].shape[0] - 1
    step = coarse.spacing[0]
    flags: list[QAFlag] = []
    for end, limit, label in ((-1, APEX_MISMATCH_MM, "apex"), (0, BASE_MISMATCH_MM, "base")):
        if {left[end], right[end]} & {0, last}:
            continue
        gap = abs(int(left[end]) - int(right[end])) * step
        if gap <= limit:
            continue
        if end == -1:
            short = "left-lung" if left[end] < right[end] else "right-lung"
            missing = np.arange(min(left[end], right[end]) + 1, max(left[end], right[end]) + 1)
        else:
            short = "left-lung" if left[end] > right[end] else "right-lung"
            missing = np.arange(min(left[end], right[end]), max(left[end], right[end]))
        name = lungs[short].structure.display
        flags.append(QAFlag(
            code="lung-length-mismatch", severity="warning", structure=short,
            message=f"{name}: its {label} ends {gap:.0f} mm {'below' if end == -1 else 'above'} the other lung's "
            f"(more than the usual {limit:.0f} mm). Check {coarse.where(missing)} for {label} lung the mask misses "
            "(dense, collapsed or cut off by disease) or a raised hemidiaphragm.",
            planes=coarse.planes(missing),
        ))
    return flags


def _ratio_flags(coarse: _Coarse, lungs: dict[str, StructureMask], volume: Volume) -> list[QAFlag]:
    voxel_ml = float(np.prod(volume.geometry.spacing)) / 1000.0
    ml = {key: np.count_nonzero(item.mask) * voxel_ml for key, item in lungs.items()}
    ratio = ml["left-lung"] / ml["right-lung"]
    if VOLUME_RATIO_RANGE[0] <= ratio <= VOLUME_RATIO_RANGE[1]:
        return []
    smaller = "left" if ratio < 1.0 else "right"
    return [QAFlag(
        code="lung-volume-ratio", severity="warning", structure=None,
        message=f"Left / right lung volume is {ratio:.2f} ({ml['left-lung']:.0f} / {ml['right-lung']:.0f} mL), outside "
        f"the usual {VOLUME_RATIO_RANGE[0]:.2f}-{VOLUME_RATIO_RANGE[1]:.2f}. Check the {smaller} lung for missed "
        "dense or collapsed lung, effusion or a lobectomy, and the other for a leak.",
    )]
