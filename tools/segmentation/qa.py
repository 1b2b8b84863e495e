"""Measurements of a structure mask and plausibility flags for the approver, added once.

`assess` runs after segmentation, whichever engine produced the result, and before anything
is stored or built (docs/architecture.md, study flow): it measures every structure and
appends the QA flags exactly once, so the stored result, the approval request and the
output files all carry the same measurements and flags.

Volumes come from the voxel count times the voxel volume of the DICOM geometry (PS3.3
C.7.6.2: Pixel Spacing and the slice step); positions are in the patient coordinate system
(LPS, PS3.3 C.7.6.2.1.1), so "left", "superior" etc. in the flags are the patient's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from tools.imaging.geometry import Geometry
from tools.imaging.orientation import OPPOSITE, SIDE_NAMES, nearest_directions
from tools.imaging.projection import is_projection
from tools.imaging.volume import Volume
from tools.segmentation.base import FlagPlanes, QAFlag, SegmentationResult, StructureMask, StructureMeasurements
from tools.segmentation.lung_qa import lung_flags
from tools.segmentation.projection_qa import assess_projection

# Adult lungs hold roughly 1-4 L each at CT; outside this band the mask (or the scan) is wrong.
LUNG_MIN_ML = 300.0
LUNG_MAX_ML = 9000.0
# A component counts as "large" above either bound (small specks are ignored).
LARGE_COMPONENT_FRACTION = 0.01
LARGE_COMPONENT_ML = 5.0
MAX_LARGE_COMPONENTS = 2
_LUNG_KEYS = ("left-lung", "right-lung")


def voxel_volume_ml(geometry: Geometry) -> float:
    return float(np.prod(geometry.spacing)) / 1000.0


def _bbox(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of a non-empty mask; work on it instead of the whole volume (speed).

    Narrowed one axis at a time: after the slices, only the rows of those slices are scanned,
    then only the columns of those (a lung fills a small part of a chest CT's 35 M voxels)."""
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    k = slice(int(slices[0]), int(slices[-1]) + 1)
    rows = np.flatnonzero(mask[k].any(axis=(0, 2)))
    r = slice(int(rows[0]), int(rows[-1]) + 1)
    columns = np.flatnonzero(mask[k, r].any(axis=(0, 1)))
    return k, r, slice(int(columns[0]), int(columns[-1]) + 1)


@dataclasses.dataclass(frozen=True)
class _Parts:
    """A non-empty mask's bounding box and its 26-connected components there, found once per structure."""

    box: tuple[slice, slice, slice]
    labels: np.ndarray
    count: int


def _parts(mask: np.ndarray) -> _Parts | None:
    if not mask.any():
        return None
    box = _bbox(mask)
    labels, count = ndimage.label(mask[box], structure=np.ones((3, 3, 3), dtype=bool))
    return _Parts(box=box, labels=labels, count=int(count))


def centroid_x(mask: np.ndarray, geometry: Geometry, box: tuple[slice, slice, slice] | None = None) -> float:
    """Patient x (LPS mm) of the centroid of a non-empty mask (``box``: its bounding box, when known)."""
    box = box or _bbox(mask)
    sub = mask[box]
    total = float(np.count_nonzero(sub))
    index = []
    for axis in range(3):
        counts = np.count_nonzero(sub, axis=tuple(a for a in range(3) if a != axis))
        index.append(box[axis].start + float(counts @ np.arange(counts.size)) / total)
    k, r, c = index
    return float(geometry.index_to_patient(np.array([c, r, k]))[0])


def measure(volume: Volume, mask: np.ndarray, parts: _Parts | None = None) -> StructureMeasurements:
    """Measure ``mask`` (bool, the volume's shape) on ``volume``'s HU and geometry (``parts``: its
    box and components, when `assess` found them already)."""
    if mask.shape != volume.array.shape:
        raise ValueError(
            f"mask of shape {mask.shape} does not fit series {volume.series_instance_uid} "
            f"of shape {volume.array.shape}; masks must be on the volume's own grid"
        )
    mask = mask.astype(bool, copy=False)
    count = int(np.count_nonzero(mask))
    if count == 0:
        return StructureMeasurements(
            volume_ml=0.0, voxel_count=0, mean_hu=None, p5_hu=None, p50_hu=None, p95_hu=None,
            bbox_index=None, bbox_mm=None, n_components=0,
        )
    parts = parts or _parts(mask)
    assert parts is not None  # the mask is not empty
    box = parts.box
    values = volume.array[box][mask[box]].astype(np.float64)
    p5, p50, p95 = (float(v) for v in np.percentile(values, [5, 50, 95]))
    bbox_index = tuple((int(s.start), int(s.stop - 1)) for s in box)
    (k0, k1), (r0, r1), (c0, c1) = bbox_index
    corners = np.array(list(np.broadcast(*np.ix_([c0, c1], [r0, r1], [k0, k1]))), dtype=float)
    patient = volume.geometry.index_to_patient(corners)
    bbox_mm = tuple((float(lo), float(hi)) for lo, hi in zip(patient.min(axis=0), patient.max(axis=0), strict=True))
    return StructureMeasurements(
        volume_ml=count * voxel_volume_ml(volume.geometry),
        voxel_count=count,
        mean_hu=float(values.mean()),
        p5_hu=p5,
        p50_hu=p50,
        p95_hu=p95,
        bbox_index=bbox_index,  # type: ignore[arg-type]
        bbox_mm=bbox_mm,  # type: ignore[arg-type]
        n_components=parts.count,
    )


def qa_flags(
    volume: Volume, structure_masks: Sequence[StructureMask], parts: dict[str, _Parts | None] | None = None
) -> list[QAFlag]:
    """Plausibility findings for a segmentation result, each naming structure and series."""
    flags: list[QAFlag] = []
    series = volume.series_instance_uid
    centroids: dict[str, float] = {}
    for item in structure_masks:
        key, name = item.structure.key, item.structure.display
        mask = item.mask.astype(bool, copy=False)
        count = int(np.count_nonzero(mask))
        if count == 0:
            flags.append(QAFlag(
                code="empty-mask", severity="fail", structure=key,
                message=f"{name}: the mask for series {series} is empty. Check that the series covers "
                "this structure and is a CT of the chest; do not use this result.",
            ))
            continue
        if item.structure.rt_roi_type == "EXTERNAL":
            # The body outline is one piece that runs off the scan at both ends by nature.
            continue
        volume_ml = count * voxel_volume_ml(volume.geometry)
        found = (parts or {}).get(key) or _parts(mask)
        assert found is not None  # the mask is not empty
        box = found.box
        if key in _LUNG_KEYS:
            flags.extend(_volume_flags(key, name, series, volume_ml))
        flags.extend(_component_flags(key, name, series, found, volume_ml))
        flags.extend(_border_flags(key, name, series, box, mask.shape, volume.geometry))
        centroids[key] = centroid_x(mask, volume.geometry, box)
    if "left-lung" in centroids and "right-lung" in centroids and centroids["left-lung"] < centroids["right-lung"]:
        flags.append(QAFlag(
            code="left-right-swapped", severity="fail", structure=None,
            message=f"Left lung and right lung of series {series} look swapped: the left-lung mask's centre "
            f"lies at patient x = {centroids['left-lung']:.1f} mm, right of the right-lung mask's "
            f"{centroids['right-lung']:.1f} mm (LPS: +x is the patient's left). Check the series' "
            "Image Orientation/Position (Patient) and the labels before approving.",
        ))
    flags.extend(lung_flags(volume, list(structure_masks)))
    return flags


def assess(volume: Volume, result: SegmentationResult) -> SegmentationResult:
    """``result`` with every structure measured and the QA flags added, once.

    Flags about one structure go to that structure, the others to the result. A result that
    was assessed already comes back as it is, so calling this again never adds a flag twice.
    """
    if result.assessed:
        return result
    if is_projection(volume.modality):
        return assess_projection(volume, result)
    parts = {item.structure.key: _parts(item.mask.astype(bool, copy=False)) for item in result.structures}
    flags = qa_flags(volume, result.structures, parts)
    structures = [
        dataclasses.replace(
            item,
            flags=[*item.flags, *(f for f in flags if f.structure == item.structure.key)],
            measurements=measure(volume, item.mask, parts[item.structure.key]),
        )
        for item in result.structures
    ]
    whole = [f for f in flags if f.structure is None]
    return dataclasses.replace(result, structures=structures, flags=[*result.flags, *whole], assessed=True)


def _volume_flags(key: str, name: str, series: str, volume_ml: float) -> list[QAFlag]:
    if volume_ml < LUNG_MIN_ML:
        return [QAFlag(
            code="volume-low", severity="warning", structure=key,
            message=f"{name}: {volume_ml:.0f} mL in series {series}, under the plausible "
            f"{LUNG_MIN_ML / 1000:.1f} L. Check whether the scan covers the whole lung, for collapse or "
            "effusion, or a missed part of the lung in the mask.",
        )]
    if volume_ml > LUNG_MAX_ML:
        return [QAFlag(
            code="volume-high", severity="fail", structure=key,
            message=f"{name}: {volume_ml / 1000:.1f} L in series {series}, over the plausible "
            f"{LUNG_MAX_ML / 1000:.0f} L. Check the mask for leaks into outside air, bowel gas or the other lung.",
        )]
    return []


def _component_flags(key: str, name: str, series: str, parts: _Parts, volume_ml: float) -> list[QAFlag]:
    if parts.count <= MAX_LARGE_COMPONENTS:
        return []
    sizes = np.bincount(parts.labels.ravel())[1:]
    ml_per_voxel = volume_ml / int(sizes.sum())
    large = int(np.count_nonzero((sizes > LARGE_COMPONENT_FRACTION * sizes.sum()) | (sizes * ml_per_voxel > LARGE_COMPONENT_ML)))
    if large <= MAX_LARGE_COMPONENTS:
        return []
    return [QAFlag(
        code="fragmented", severity="warning", structure=key,
        message=f"{name}: the mask in series {series} has {large} large separate parts (each over "
        f"{LARGE_COMPONENT_FRACTION:.0%} of it or {LARGE_COMPONENT_ML:.0f} mL). Check for included bowel gas "
        "or airways, or a lung cut apart by the segmentation.",
    )]


def _border_flags(
    key: str, name: str, series: str, box: tuple[slice, slice, slice], shape: tuple[int, ...], geometry: Geometry
) -> list[QAFlag]:
    """One flag per volume face the mask (with bounding box ``box``) touches, named by the patient side of that face."""
    towards = nearest_directions(geometry)
    flags: list[QAFlag] = []
    for axis in range(3):
        for end in (0, shape[axis] - 1):
            if end not in (box[axis].start, box[axis].stop - 1):
                continue
            # The last index lies towards the axis' direction, index 0 towards the opposite side.
            letter = towards[axis] if end != 0 else OPPOSITE[towards[axis]]
            side = SIDE_NAMES[letter]
            if side in ("superior", "inferior"):
                flags.append(QAFlag(
                    code=f"touches-{side}-edge", severity="warning", structure=key,
                    message=f"{name} reaches the {side} edge of series {series}: the scan probably cuts the "
                    "lung, so its volume is underestimated. Check the coverage before using the volume.",
                    planes=FlagPlanes(axis=axis, first=end, last=end),
                ))
            else:
                flags.append(QAFlag(
                    code=f"touches-{side}-edge", severity="fail", structure=key,
                    message=f"{name} reaches the {side} ({'lateral' if side in ('left', 'right') else 'front/back'}) "
                    f"edge of series {series}'s field of view: lungs lie inside the chest wall, so the mask "
                    "probably includes outside air or the field of view cuts the chest. Check the mask "
                    "at that edge.",
                    planes=FlagPlanes(axis=axis, first=end, last=end),
                ))
    return flags
