"""Measurements and QA flags of structures on a projection radiograph (CR / DX).

A radiograph is a shadow: a structure has an area in the image plane, not a volume, and
overlapping organs share pixels. So each structure gets its projected area (mm², pixel count
times the pixel size of tools/imaging/projection.py), and with the heart and both lungs the
cardiothoracic ratio (CTR): the heart's widest horizontal extent over the thorax's widest
internal extent, measured here as the widest row from the right lung's outer edge to the left
lung's outer edge (the lung fields' edges stand for the inner rib margins). A CTR above 0.5 on a
PA view is the classic sign of an enlarged heart; an AP view magnifies the heart, which the flag
says.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pydantic import BaseModel
from scipy import ndimage

from tools.imaging.volume import Volume
from tools.segmentation.base import QAFlag, SegmentationResult, StructureMask, StructureMeasurements

CTR_UPPER_NORMAL = 0.5
MAX_LUNG_COMPONENTS = 2
_LUNG_KEYS = ("left-lung", "right-lung")


class CardiothoracicRatio(BaseModel):
    """The CTR and the two widths it is made of, in mm in the image plane."""

    ratio: float
    heart_width_mm: float
    thorax_width_mm: float


def pixel_area_mm2(volume: Volume) -> float:
    column_mm, row_mm, _ = volume.geometry.spacing
    return column_mm * row_mm


def _widest_row_mm(mask: np.ndarray, column_mm: float) -> float:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0.0
    first = np.argmax(mask[rows], axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[rows, ::-1], axis=1)
    return float((last - first + 1).max()) * column_mm


def cardiothoracic_ratio(volume: Volume, result: SegmentationResult) -> CardiothoracicRatio | None:
    """The CTR of a radiograph's heart and lungs, or None unless all three were segmented and found."""
    masks = {item.structure.key: item.mask[0] for item in result.structures}
    if not {"heart", *_LUNG_KEYS} <= masks.keys() or not all(masks[k].any() for k in ("heart", *_LUNG_KEYS)):
        return None
    column_mm = volume.geometry.spacing[0]
    heart = _widest_row_mm(masks["heart"], column_mm)
    thorax = _widest_row_mm(masks["left-lung"] | masks["right-lung"] | masks["heart"], column_mm)
    return CardiothoracicRatio(
        ratio=round(heart / thorax, 3), heart_width_mm=round(heart, 1), thorax_width_mm=round(thorax, 1)
    )


def measure_projection(volume: Volume, mask: np.ndarray) -> StructureMeasurements:
    """Area, box and pieces (8-connected) of a mask on a one-plane radiograph volume.

    Presentation values are not Hounsfield units: no density statistics on a radiograph, and no volume."""
    plane = mask[0].astype(bool, copy=False)
    count = int(np.count_nonzero(plane))
    empty = StructureMeasurements(
        volume_ml=0.0, voxel_count=0, mean_hu=None, p5_hu=None, p50_hu=None, p95_hu=None,
        bbox_index=None, bbox_mm=None, n_components=0, area_mm2=0.0,
    )
    if count == 0:
        return empty
    rows, columns = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    bbox_index = ((0, 0), (int(rows[0]), int(rows[-1])), (int(columns[0]), int(columns[-1])))
    corners = np.array([[c, r, 0] for c in bbox_index[2] for r in bbox_index[1]], dtype=float)
    patient = volume.geometry.index_to_patient(corners)
    bbox_mm = tuple((float(lo), float(hi)) for lo, hi in zip(patient.min(axis=0), patient.max(axis=0), strict=True))
    _, pieces = ndimage.label(plane, structure=np.ones((3, 3), dtype=bool))
    return empty.model_copy(update={
        "voxel_count": count, "area_mm2": round(count * pixel_area_mm2(volume), 1),
        "bbox_index": bbox_index, "bbox_mm": bbox_mm, "n_components": int(pieces),
    })


def _structure_flags(volume: Volume, item: StructureMask) -> list[QAFlag]:
    key, name, series = item.structure.key, item.structure.display, volume.series_instance_uid
    measured = item.measurements
    if measured is None or measured.voxel_count == 0:
        return [QAFlag(
            code="empty-mask", severity="fail", structure=key,
            message=f"{name}: the mask on radiograph series {series} is empty. Check that the image is a frontal "
            "chest radiograph; do not use this result.",
        )]
    if key in _LUNG_KEYS and measured.n_components > MAX_LUNG_COMPONENTS:
        return [QAFlag(
            code="fragmented", severity="warning", structure=key,
            message=f"{name}: the mask on radiograph series {series} is in {measured.n_components} pieces. Check "
            "for parts of the lung field missed by the mask.",
        )]
    return []


def _ctr_flags(volume: Volume, result: SegmentationResult) -> list[QAFlag]:
    ctr = cardiothoracic_ratio(volume, result)
    if ctr is None:
        return []
    series = volume.series_instance_uid
    where = f"cardiothoracic ratio {ctr.ratio:.2f} (heart {ctr.heart_width_mm:.0f} mm, thorax {ctr.thorax_width_mm:.0f} mm)"
    if ctr.ratio <= CTR_UPPER_NORMAL:
        return [QAFlag(code="cardiothoracic-ratio", severity="info", structure="heart",
                       message=f"Radiograph series {series}: {where}.")]
    return [QAFlag(
        code="cardiothoracic-ratio-high", severity="warning", structure="heart",
        message=f"Radiograph series {series}: {where}, above {CTR_UPPER_NORMAL:g}. Check the heart's outline "
        "and the lung edges before approving; an AP view magnifies the heart.",
    )]


def assess_projection(volume: Volume, result: SegmentationResult) -> SegmentationResult:
    """``result`` on a radiograph with every structure measured (area) and the QA flags added, once."""
    if result.assessed:
        return result
    structures = []
    for item in result.structures:
        measured = dataclasses.replace(item, measurements=measure_projection(volume, item.mask))
        structures.append(dataclasses.replace(measured, flags=[*item.flags, *_structure_flags(volume, measured)]))
    assessed = dataclasses.replace(result, structures=structures, assessed=True)
    for flag in _ctr_flags(volume, assessed):
        for item in assessed.structures:
            if item.structure.key == flag.structure:
                item.flags.append(flag)
    return assessed
