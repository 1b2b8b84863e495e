"""The phantom's exact lung masks on disk, next to its written series."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.phantom.spec import Phantom


@dataclass(frozen=True)
class PhantomMasks:
    """Lung masks as saved next to a written phantom series."""

    left_lung: np.ndarray
    right_lung: np.ndarray
    series_instance_uid: str


def save_masks(phantom: Phantom, path: Path) -> None:
    """Save the exact lung masks (array order) and the series UID as a compressed .npz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        left=phantom.left_lung,
        right=phantom.right_lung,
        series_instance_uid=np.array(phantom.series_instance_uid),
    )


def load_masks(path: Path) -> PhantomMasks:
    """Load masks written by ``save_masks``."""
    if not path.is_file():
        raise FileNotFoundError(
            f"phantom mask file {path} does not exist; write it with save_masks(phantom, path)"
        )
    with np.load(path, allow_pickle=False) as data:
        missing = {"left", "right", "series_instance_uid"} - set(data.files)
        if missing:
            raise ValueError(
                f"phantom mask file {path} lacks {sorted(missing)}; it was not written by "
                "save_masks: write it again with save_masks(phantom, path)"
            )
        left, right = data["left"], data["right"]
        series_uid = str(data["series_instance_uid"])
    if left.dtype != np.bool_ or right.dtype != np.bool_ or left.shape != right.shape:
        raise ValueError(
            f"phantom mask file {path} (series {series_uid}): masks must be boolean arrays of one "
            f"shape, got {left.dtype}{left.shape} and {right.dtype}{right.shape}; write it again "
            "with save_masks"
        )
    return PhantomMasks(left_lung=left, right_lung=right, series_instance_uid=series_uid)
