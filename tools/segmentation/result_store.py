"""Segmentation results on disk: masks as a compressed .npz beside their description.

The description keeps what `qa.assess` added (measurements, flags, the assessed mark), so a
result loaded back is built into files without measuring or flagging it again.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from tools.imaging.npz_store import load_npz, save_npz
from tools.segmentation.base import (
    STRUCTURES,
    QAFlag,
    ResultEdit,
    SegmentationResult,
    StructureMask,
    StructureMeasurements,
)


def save_result(result: SegmentationResult, path: Path) -> str:
    """Write masks + engine, confidences, flags and measurements; returns the file's sha256."""
    meta = {
        "engine": result.engine,
        "engine_version": result.engine_version,
        "seconds": result.seconds,
        "assessed": result.assessed,
        "parameters": result.parameters,
        "edit": result.edit.model_dump(mode="json") if result.edit else None,
        "flags": [f.model_dump(mode="json") for f in result.flags],
        "structures": [
            {
                "key": s.structure.key,
                "confidence": s.confidence,
                "flags": [f.model_dump(mode="json") for f in s.flags],
                "measurements": s.measurements.model_dump(mode="json") if s.measurements else None,
            }
            for s in result.structures
        ],
    }
    # Packed bits: zlib then sees an eighth of the bytes, which made writing a chest's masks
    # several times faster than compressing the booleans (issue 11).
    meta["shape"] = list(result.structures[0].mask.shape) if result.structures else []
    masks = {f"bits_{i}": np.packbits(s.mask, axis=None) for i, s in enumerate(result.structures)}
    return save_npz(path, meta, compressed=True, **masks)


def _mask(arrays: dict[str, np.ndarray], meta: dict[str, Any], index: int) -> np.ndarray:
    if f"bits_{index}" not in arrays:  # written before masks were packed: booleans
        return arrays[f"mask_{index}"].astype(bool)
    shape = tuple(meta["shape"])
    return np.unpackbits(arrays[f"bits_{index}"], count=math.prod(shape)).reshape(shape).view(bool)


def load_result(path: Path, expected_sha256: str | None = None) -> SegmentationResult:
    meta, arrays = load_npz(path, expected_sha256, what="segmentation", remedy="delete it and run the study again.")
    structures = [
        StructureMask(
            structure=STRUCTURES[item["key"]],
            mask=_mask(arrays, meta, i),
            confidence=float(item["confidence"]),
            flags=[QAFlag.model_validate(f) for f in item["flags"]],
            measurements=(
                StructureMeasurements.model_validate(item["measurements"]) if item.get("measurements") else None
            ),
        )
        for i, item in enumerate(meta["structures"])
    ]
    return SegmentationResult(
        engine=meta["engine"],
        engine_version=meta["engine_version"],
        structures=structures,
        flags=[QAFlag.model_validate(f) for f in meta["flags"]],
        seconds=float(meta["seconds"]),
        assessed=bool(meta.get("assessed", False)),
        # Results saved before engines named their parameters have none.
        parameters={str(k): str(v) for k, v in meta.get("parameters", {}).items()},
        edit=ResultEdit.model_validate(meta["edit"]) if meta.get("edit") else None,
    )
