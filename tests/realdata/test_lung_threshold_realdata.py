"""The lung engine on real CT: LIDC-IDRI-0001 (a whole chest, feet first) and the lung bases
of the TotalSegmentator example (Dice against its lobe labels).

Measured when these tests were written (lung-threshold 1.0.0): LIDC left 1.75 L, right
1.97 L, confidence 1.0 each; TotalSegmentator bases Dice left 0.955, right 0.967. The floors
below leave room for small algorithm changes but catch a lung that leaks, loses a lobe or
swaps sides.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tools.imaging.geometry import Geometry
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.segmentation.base import SegmentationResult
from tools.segmentation.lung_threshold import LungThresholdEngine
from tools.segmentation.qa import assess, measure

pytestmark = pytest.mark.realdata

# Adult lungs at CT are 1-4 L each; LIDC-IDRI-0001 measures 1.75 / 1.97 L.
LIDC_LUNG_ML = (1000.0, 4000.0)
# Measured 0.955 (left) and 0.967 (right) against an automatic reference at 3 mm voxels,
# where one voxel layer on these 42 / 74 mL lung bases is worth about 0.1 of Dice.
TOTALSEG_DICE_FLOOR = 0.92
# NIfTI's RAS+ world to DICOM's LPS: flip x and y.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.count_nonzero(a & b)) / float(np.count_nonzero(a) + np.count_nonzero(b))


def centroid_x(volume: Volume, mask: np.ndarray) -> float:
    k, r, c = np.argwhere(mask).mean(axis=0)
    return float(volume.geometry.index_to_patient(np.array([c, r, k]))[0])


def nifti_volume(path: Path) -> tuple[Volume, np.ndarray]:
    """A NIfTI CT as a Volume: array (k, j, i) from NIfTI's (i, j, k), geometry in LPS.

    Returns the volume and the function's transposition applied to a same-grid label map.
    """
    image = nib.load(path)
    affine = image.affine
    array = np.asarray(image.dataobj).astype(np.int16).transpose(2, 1, 0)
    columns = [RAS_TO_LPS @ affine[:3, axis] for axis in range(3)]
    spacing = tuple(float(np.linalg.norm(c)) for c in columns)
    direction = tuple(tuple(float(v) for v in c / np.linalg.norm(c)) for c in columns)
    geometry = Geometry(
        origin=tuple(float(v) for v in RAS_TO_LPS @ affine[:3, 3]),
        spacing=spacing,  # type: ignore[arg-type]
        direction=direction,  # type: ignore[arg-type]
        shape=array.shape,  # type: ignore[arg-type]
    )
    volume = Volume(
        array=array,
        geometry=geometry,
        series_instance_uid=f"nifti:{path.name}",
        study_instance_uid="nifti",
        frame_of_reference_uid="nifti",
        modality="CT",
        sop_instance_uids=[f"{path.name}#{k}" for k in range(array.shape[0])],
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    )
    return volume, array


@pytest.fixture(scope="module")
def lidc(shared_data: Path) -> tuple[Volume, SegmentationResult]:
    volume = assemble_volume(read_series_dir(shared_data / "lidc-idri-0001" / "dicom"))
    return volume, assess(volume, LungThresholdEngine().segment(volume, ["lungs"]))


def test_lidc_lung_volumes_sides_and_confidence(lidc: tuple[Volume, SegmentationResult]) -> None:
    volume, result = lidc
    found = {s.structure.key: s for s in result.structures}
    for key in ("left-lung", "right-lung"):
        m = measure(volume, found[key].mask)
        assert LIDC_LUNG_ML[0] <= m.volume_ml <= LIDC_LUNG_ML[1], (key, m.volume_ml)
        assert m.n_components <= 3, (key, m.n_components)
        assert m.p50_hu is not None and -950 < m.p50_hu < -700, (key, m.p50_hu)
        assert found[key].confidence >= 0.9
        assert found[key].flags == [], found[key].flags
    assert result.flags == []
    # The series is feet first: the patient's left is at larger x whatever the array order.
    assert centroid_x(volume, found["left-lung"].mask) > centroid_x(volume, found["right-lung"].mask)
    assert not (found["left-lung"].mask & found["right-lung"].mask).any()


def test_lidc_trachea_is_not_lung(lidc: tuple[Volume, SegmentationResult]) -> None:
    """In the top 2.5 cm the midline air column is the trachea: none of it may be in a lung."""
    volume, result = lidc
    either = result.structures[0].mask | result.structures[1].mask
    z = volume.geometry.index_to_patient(np.array([[0.0, 0.0, k] for k in range(volume.array.shape[0])]))[:, 2]
    top = np.argsort(z)[::-1][: int(round(25.0 / volume.geometry.spacing[2]))]
    columns_x = volume.geometry.index_to_patient(np.array([[c, 0.0, 0.0] for c in range(volume.array.shape[2])]))[:, 0]
    trachea_voxels = 0
    for k in top:
        body_columns = np.flatnonzero((volume.array[k] > -500).any(axis=0))
        mid_x = columns_x[body_columns].mean()
        midline = np.abs(columns_x - mid_x) <= 15.0
        air = (volume.array[k] < -900)[:, midline]
        body_rows = np.flatnonzero((volume.array[k] > -500).any(axis=1))
        air[: body_rows[0]] = air[body_rows[-1] :] = False  # air in front of and behind the body
        trachea_voxels += int(np.count_nonzero(air))
        assert not (either[k][:, midline] & air).any(), f"slice {k}: midline air column inside a lung mask"
    assert trachea_voxels > 500  # the check above looked at a real air column


def test_totalsegmentator_lung_bases_dice(shared_data: Path) -> None:
    folder = shared_data / "totalsegmentator-example"
    volume, _ = nifti_volume(folder / "example_ct_sm.nii.gz")
    reference = np.asarray(nib.load(folder / "example_seg.nii.gz").dataobj).transpose(2, 1, 0)
    result = assess(volume, LungThresholdEngine().segment(volume, ["lungs"]))
    found = {s.structure.key: s for s in result.structures}
    left = dice(found["left-lung"].mask, np.isin(reference, (10, 11)))
    right = dice(found["right-lung"].mask, np.isin(reference, (12, 13, 14)))
    assert left >= TOTALSEG_DICE_FLOOR and right >= TOTALSEG_DICE_FLOOR, (left, right)
    # Only the lung bases are in view: the QA must say so for both lungs.
    for key in ("left-lung", "right-lung"):
        codes = {f.code for f in found[key].flags}
        assert {"volume-low", "touches-superior-edge"} <= codes, (key, codes)
        assert all(f.severity == "warning" for f in found[key].flags), found[key].flags
    assert result.flags == []
