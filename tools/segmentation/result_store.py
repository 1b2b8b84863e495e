"""Segmentation results on disk: masks as a compressed .npz beside their description."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tools.imaging.volume_store import file_sha256, save_npz
from tools.segmentation.base import STRUCTURES, QAFlag, SegmentationResult, StructureMask


def save_result(result: SegmentationResult, path: Path) -> str:
    """Write masks + engine, confidences and flags; returns the file's sha256."""
    meta = {
        "engine": result.engine,
        "engine_version": result.engine_version,
        "seconds": result.seconds,
        "flags": [f.model_dump(mode="json") for f in result.flags],
        "structures": [
            {"key": s.structure.key, "confidence": s.confidence, "flags": [f.model_dump(mode="json") for f in s.flags]}
            for s in result.structures
        ],
    }
    masks = {f"mask_{i}": s.mask for i, s in enumerate(result.structures)}
    return save_npz(path, compressed=True, meta=np.array(json.dumps(meta)), **masks)


def load_result(path: Path, expected_sha256: str | None = None) -> SegmentationResult:
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise ValueError(
            f"the cached segmentation {path} changed since it was written (hash mismatch); delete it "
            "and run the study again."
        )
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        structures = [
            StructureMask(
                structure=STRUCTURES[item["key"]],
                mask=data[f"mask_{i}"].astype(bool),
                confidence=float(item["confidence"]),
                flags=[QAFlag.model_validate(f) for f in item["flags"]],
            )
            for i, item in enumerate(meta["structures"])
        ]
    return SegmentationResult(
        engine=meta["engine"],
        engine_version=meta["engine_version"],
        structures=structures,
        flags=[QAFlag.model_validate(f) for f in meta["flags"]],
        seconds=float(meta["seconds"]),
    )
