"""Stored lung masks of the built-in engine, to check that a faster engine draws the same lungs.

Each case is one .npz in tests/reference_masks/: per structure its bounding box in the volume
and the box's voxels as packed bits (np.packbits), so a whole LIDC chest takes a few hundred kB.
The masks are the engine's own output on the day they were stored, not a human truth: a speed
change must keep Dice >= MIN_DICE against them (issue 11). A change that means to draw different
lungs (better agreement with a human or TotalSegmentator reference) stores new ones, on purpose,
in the same commit:

    PYTHONPATH=. .venv/bin/python -m tests.reference_masks
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.phantom import PhantomSpec, make_phantom, write_phantom
from tools.segmentation.base import SegmentationResult
from tools.segmentation.lung_threshold import LungThresholdEngine

FOLDER = Path(__file__).resolve().parent / "reference_masks"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MIN_DICE = 0.999
# The phantom of tests/unit/test_output_bytes_stable.py, feet first: small, and off the identity layout.
PHANTOM = PhantomSpec(
    slices=40, rows=128, columns=128, pixel_spacing_mm=3.0, slice_thickness_mm=7.5, patient_position="FFS"
)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; two empty masks agree fully."""
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2.0 * float(np.count_nonzero(a & b)) / float(total)


def save(path: Path, result: SegmentationResult) -> None:
    arrays: dict[str, np.ndarray] = {}
    for item in result.structures:
        mask = item.mask.astype(bool, copy=False)
        present = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
        box = np.array([(p[0], p[-1] + 1) if p.size else (0, 0) for p in present], dtype=np.int32)
        crop = mask[tuple(slice(lo, hi) for lo, hi in box)]
        arrays[f"{item.structure.key}.box"] = box
        arrays[f"{item.structure.key}.bits"] = np.packbits(crop, axis=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, shape=np.array(result.structures[0].mask.shape), **arrays)


def load(path: Path) -> dict[str, np.ndarray]:
    """Structure key -> full-size boolean mask."""
    stored = np.load(path)
    shape = tuple(int(n) for n in stored["shape"])
    masks: dict[str, np.ndarray] = {}
    for name in stored.files:
        if not name.endswith(".box"):
            continue
        key = name.removesuffix(".box")
        box = stored[name]
        size = tuple(int(hi - lo) for lo, hi in box)
        mask = np.zeros(shape, dtype=bool)
        bits = np.unpackbits(stored[f"{key}.bits"], count=int(np.prod(size))).astype(bool)
        mask[tuple(slice(lo, hi) for lo, hi in box)] = bits.reshape(size)
        masks[key] = mask
    return masks


def phantom_volume(folder: Path) -> Volume:
    write_phantom(make_phantom(PHANTOM), folder)
    return assemble_volume(read_series_dir(folder))


def lidc_volume(shared_data: Path) -> Volume:
    return assemble_volume(read_series_dir(shared_data / "lidc-idri-0001" / "dicom"))


def totalsegmentator_volume(shared_data: Path) -> Volume:
    """The TotalSegmentator example's NIfTI CT (its DICOM folder shows no lungs): the lung bases."""
    from tests.realdata.test_lung_threshold_realdata import nifti_volume

    return nifti_volume(shared_data / "totalsegmentator-example" / "example_ct_sm.nii.gz")[0]


def _store_all() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cases: dict[str, Callable[[], Volume]] = {
            "phantom-ffs": lambda: phantom_volume(Path(tmp) / "ct"),
            "lidc-idri-0001": lambda: lidc_volume(SHARED_DATA),
            "totalsegmentator-example": lambda: totalsegmentator_volume(SHARED_DATA),
        }
        for name, volume_of in cases.items():
            result = LungThresholdEngine().segment(volume_of(), ["lungs"])
            save(FOLDER / f"{name}.npz", result)
            print(f"{name}: {result.engine} {result.engine_version} -> {FOLDER / name}.npz")


if __name__ == "__main__":
    _store_all()
