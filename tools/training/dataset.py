"""Training cases on disk, in exactly the frame the `monai-bundle` engine feeds its network.

A case is one CT series with its lung label map, saved as ``<case id>.npz``:

    image   int16 Hounsfield units, indexed (x, y, z) with the axes pointing R, A, S
            (`tools.segmentation.monai_bundle.to_ras`, the engine's own transform), resampled
            to ``pixdim`` mm the way the engine resamples (trilinear, same output size rule)
    label   uint8 on the same grid: 0 background, 1 left lung, 2 right lung (nearest neighbour)
    info    JSON of :class:`CaseInfo` (identifiers only: no patient name, no free text)

Using the engine's transform, not a copy of it, is what guarantees that a bundle trained here
sees at inference the same orientation it was trained on; a left/right mix-up would otherwise
pass every loss and fail every patient.

The held-out split depends on each case id alone (a hash), so a case keeps its side when more
cases are added: a case used to validate one model never trains the next one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from tools.imaging.volume import Volume
from tools.segmentation.monai_bundle import to_ras

log = logging.getLogger(__name__)

# Label values in the case files and in the bundles trained here (metadata channel_def).
CHANNEL_DEF: dict[int, str] = {0: "background", 1: "left lung", 2: "right lung"}
LABEL_OF_STRUCTURE: dict[str, int] = {"left-lung": 1, "right-lung": 2}
DEFAULT_PIXDIM: tuple[float, float, float] = (2.0, 2.0, 2.0)

Origin = Literal["approved-agent-output", "human-made", "phantom"]


class CaseInfo(BaseModel):
    """Where a case came from: enough to find every object again in the PACS."""

    case_id: str
    study_instance_uid: str
    ct_series_instance_uid: str
    label_series_instance_uid: str
    label_sop_instance_uid: str
    label_kind: Literal["RTSTRUCT", "SEG", "phantom"]
    origin: Origin
    pixdim: tuple[float, float, float]
    shape: tuple[int, int, int] = Field(description="(x, y, z) voxels after resampling")
    voxels: dict[str, int] = Field(default_factory=dict, description="label name -> voxel count")


@dataclasses.dataclass
class Case:
    info: CaseInfo
    image: np.ndarray
    """int16 HU, (x, y, z) RAS at info.pixdim"""
    label: np.ndarray
    """uint8, same shape: values of CHANNEL_DEF"""


class CaseError(ValueError):
    """A case cannot be written or read; the message names the series or file."""


def resampled_size(shape: Sequence[int], spacing: Sequence[float], pixdim: Sequence[float]) -> list[int]:
    """Output size of a resampling to ``pixdim``: the rule `MonaiBundleEngine._preprocess` uses."""
    return [max(1, round(n * s / p)) for n, s, p in zip(shape, spacing, pixdim, strict=True)]


def resample(array: np.ndarray, spacing: Sequence[float], pixdim: Sequence[float], *, labels: bool) -> np.ndarray:
    """Resample an (x, y, z) array to ``pixdim``: trilinear for HU, nearest neighbour for labels."""
    size = resampled_size(array.shape, spacing, pixdim)
    if list(array.shape) == size:
        return array
    data = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32))[None, None]
    if labels:
        out = torch.nn.functional.interpolate(data, size=size, mode="nearest")
        return out[0, 0].numpy().astype(np.uint8)
    out = torch.nn.functional.interpolate(data, size=size, mode="trilinear", align_corners=False)
    return np.rint(out[0, 0].numpy()).astype(np.int16)


def label_map(left: np.ndarray, right: np.ndarray, series_uid: str) -> np.ndarray:
    """The (slice, row, column) label map of two lung masks; they must not overlap."""
    if left.shape != right.shape:
        raise CaseError(f"series {series_uid}: left and right lung masks differ in shape ({left.shape} vs {right.shape})")
    overlap = int(np.count_nonzero(left & right))
    if overlap:
        raise CaseError(
            f"series {series_uid}: the left and right lung contours overlap in {overlap} voxels, so the "
            "voxels have no single label; correct the structure set before using it for training."
        )
    labels = np.zeros(left.shape, np.uint8)
    labels[left] = LABEL_OF_STRUCTURE["left-lung"]
    labels[right] = LABEL_OF_STRUCTURE["right-lung"]
    return labels


def case_arrays(
    volume: Volume, left: np.ndarray, right: np.ndarray, pixdim: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Image and label map of a volume in the engine's (x, y, z) RAS frame at ``pixdim``."""
    labels = label_map(left, right, volume.series_instance_uid)
    if labels.shape != volume.array.shape:
        raise CaseError(
            f"series {volume.series_instance_uid}: the masks are {labels.shape}, the CT {volume.array.shape}; "
            "masks must lie on the CT's own grid."
        )
    image_ras, spacing, _ = to_ras(volume)
    label_ras, _, _ = to_ras(dataclasses.replace(volume, array=labels))
    return resample(image_ras, spacing, pixdim, labels=False), resample(label_ras, spacing, pixdim, labels=True)


def case_path(cases_dir: Path, case_id: str) -> Path:
    return cases_dir / f"{case_id}.npz"


def write_case(cases_dir: Path, info: CaseInfo, image: np.ndarray, label: np.ndarray) -> Path:
    """Save one case; written to a temporary file first so that a crash leaves no half case."""
    if image.shape != label.shape:
        raise CaseError(f"case {info.case_id}: image {image.shape} and label {label.shape} differ in shape")
    cases_dir.mkdir(parents=True, exist_ok=True)
    info = info.model_copy(
        update={
            "shape": tuple(int(n) for n in image.shape),
            "voxels": {name: int(np.count_nonzero(label == value)) for value, name in CHANNEL_DEF.items() if value},
        }
    )
    path = case_path(cases_dir, info.case_id)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as handle:
        np.savez_compressed(
            handle, image=image.astype(np.int16), label=label.astype(np.uint8), info=np.array(info.model_dump_json())
        )
    os.replace(partial, path)
    log.info("training case %s (CT series %s): %s voxels at %s mm", info.case_id, info.ct_series_instance_uid, info.shape, info.pixdim)
    return path


def read_case_info(path: Path) -> CaseInfo:
    """Only the info of a case (cheap: the arrays stay on disk)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return CaseInfo.model_validate_json(str(data["info"]))
    except (OSError, KeyError, ValueError) as exc:
        raise CaseError(f"training case {path} cannot be read ({exc}); delete it and gather the cases again.") from exc


def read_case(path: Path) -> Case:
    try:
        with np.load(path, allow_pickle=False) as data:
            info = CaseInfo.model_validate_json(str(data["info"]))
            image, label = data["image"], data["label"]
    except (OSError, KeyError, ValueError) as exc:
        raise CaseError(f"training case {path} cannot be read ({exc}); delete it and gather the cases again.") from exc
    if image.shape != label.shape or image.ndim != 3:
        raise CaseError(f"training case {path}: image {image.shape} and label {label.shape} are not one 3D grid; gather it again.")
    return Case(info=info, image=image, label=label)


def list_cases(cases_dir: Path) -> list[Path]:
    """Case files in ``cases_dir``, sorted by case id."""
    return sorted(cases_dir.glob("*.npz")) if cases_dir.is_dir() else []


def _hash_fraction(case_id: str) -> float:
    return int(hashlib.sha256(case_id.encode()).hexdigest()[:12], 16) / float(16**12)


def split_cases(case_ids: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(training ids, held-out ids), decided by each id's hash.

    A case is held out when its hash fraction is below ``val_fraction``. With few cases that
    can leave one side empty; then the case nearest the threshold changes side, so both sides
    always hold at least one case.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if len(set(case_ids)) < 2:
        raise ValueError(f"a held-out split needs at least 2 distinct cases, got {len(set(case_ids))}")
    ranked = sorted(set(case_ids), key=_hash_fraction)
    held = [c for c in ranked if _hash_fraction(c) < val_fraction]
    if not held:
        held = ranked[:1]
    elif len(held) == len(ranked):
        held = ranked[:-1]
    train = [c for c in ranked if c not in held]
    return sorted(train), sorted(held)


def write_skipped(cases_dir: Path, skipped: Sequence[BaseModel]) -> Path:
    """Keep the gather's skipped-case reasons next to the cases: training quotes them."""
    cases_dir.mkdir(parents=True, exist_ok=True)
    path = cases_dir / "skipped.json"
    path.write_text(json.dumps([s.model_dump() for s in skipped], indent=2))
    return path


def read_skipped(cases_dir: Path) -> list[dict[str, str]]:
    path = cases_dir / "skipped.json"
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text()))
    except ValueError:
        return []
