"""A region no structure may hold — the GTV, as radiotherapy lung contours leave it out
(RTOG/TG-263 "Lung minus GTV") — taken out of any engine's result before QA.

Applied by the workflow to whichever engine produced the result, so the rule is the same for the
built-in engine, a MONAI bundle and MedImageParse; the result says what was left out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tools.imaging.volume import Volume
from tools.segmentation.base import EngineError, QAFlag, SegmentationResult


@dataclass(frozen=True)
class Exclusion:
    mask: np.ndarray
    """bool, on the volume's own grid"""
    source: str
    """where it comes from, for the reviewer: e.g. "ROI 'GTV-1' of RTSTRUCT 1.2.3" """


def without(result: SegmentationResult, exclusion: Exclusion, volume: Volume) -> SegmentationResult:
    """`result` with `exclusion.mask` taken out of every structure, and an info flag saying how much."""
    if exclusion.mask.shape != volume.array.shape:
        raise EngineError(
            f"the region to leave out ({exclusion.source}) has shape {exclusion.mask.shape}, not that of series "
            f"{volume.series_instance_uid} {volume.array.shape}; it must be on the series' own grid"
        )
    region = exclusion.mask.astype(bool, copy=False)
    voxel_ml = float(np.prod(volume.geometry.spacing)) / 1000.0
    structures = []
    removed_ml: dict[str, float] = {}
    for structure in result.structures:
        removed_ml[structure.structure.key] = float(np.count_nonzero(structure.mask & region)) * voxel_ml
        structures.append(replace(structure, mask=structure.mask & ~region))
    detail = ", ".join(f"{key} {ml:.1f} mL" for key, ml in removed_ml.items())
    flag = QAFlag(
        code="region-excluded",
        severity="info",
        structure=None,
        message=f"{exclusion.source} ({float(np.count_nonzero(region)) * voxel_ml:.1f} mL) is left out of every "
        f"structure, as radiotherapy contours leave the GTV out; removed: {detail}",
    )
    parameters = {**result.parameters, "excluded_region": exclusion.source}
    return replace(result, structures=structures, flags=[*result.flags, flag], parameters=parameters)
