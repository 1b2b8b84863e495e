"""Real series damaged the ways PACS exports go wrong must be refused with a clear reason.

Each case copies only the slices it changes; the module reads the data once.
Data: LIDC-IDRI-0001 (CC BY 3.0; Armato SG III et al., Med Phys 38(2):915-931, 2011; TCIA)
and the TotalSegmentator example (CC BY 4.0; Wasserthal J et al., 2023).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

from tools.imaging.volume import SeriesRefusedError, assemble_volume, read_series_dir

pytestmark = pytest.mark.realdata

MIDDLE = 66


@pytest.fixture(scope="module")
def lidc(shared_data: Path) -> list[Dataset]:
    """LIDC-IDRI-0001 in position order (z from -340 to -10 mm, 2.5 mm apart)."""
    datasets = read_series_dir(shared_data / "lidc-idri-0001" / "dicom")
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


def refusal(datasets: list[Dataset]) -> SeriesRefusedError:
    with pytest.raises(SeriesRefusedError) as caught:
        assemble_volume(datasets)
    return caught.value


def replaced(datasets: list[Dataset], index: int) -> tuple[list[Dataset], Dataset]:
    """A copy of the list whose slice ``index`` is a deep copy, ready to change."""
    changed = copy.deepcopy(datasets[index])
    return [*datasets[:index], changed, *datasets[index + 1 :]], changed


def assert_refused(error: SeriesRefusedError, reason: str, series_uid: str) -> None:
    assert error.reason == reason
    assert error.series_instance_uid == series_uid
    assert series_uid in str(error)
    assert reason in str(error)


def test_unchanged_series_is_accepted(lidc: list[Dataset]) -> None:
    assert assemble_volume(lidc).array.shape[0] == len(lidc)


def test_dropped_middle_slice(lidc: list[Dataset]) -> None:
    error = refusal([*lidc[:MIDDLE], *lidc[MIDDLE + 1 :]])
    assert_refused(error, "missing-slices", lidc[0].SeriesInstanceUID)
    assert "5.00 mm" in error.detail
    assert lidc[MIDDLE - 1].SOPInstanceUID in error.detail


def test_duplicated_slice(lidc: list[Dataset]) -> None:
    twin = copy.deepcopy(lidc[MIDDLE])
    twin.SOPInstanceUID = generate_uid()
    error = refusal([*lidc, twin])
    assert_refused(error, "duplicate-position", lidc[0].SeriesInstanceUID)
    assert twin.SOPInstanceUID in error.detail


def test_one_slice_rotated(lidc: list[Dataset]) -> None:
    datasets, changed = replaced(lidc, MIDDLE)
    angle = math.radians(1.0)
    changed.ImageOrientationPatient = [math.cos(angle), math.sin(angle), 0.0, -math.sin(angle), math.cos(angle), 0.0]
    error = refusal(datasets)
    assert_refused(error, "mixed-orientation", lidc[0].SeriesInstanceUID)
    assert changed.SOPInstanceUID in error.detail


def test_one_slice_shifted_along_normal(lidc: list[Dataset]) -> None:
    datasets, changed = replaced(lidc, MIDDLE)
    x, y, z = (float(v) for v in changed.ImagePositionPatient)
    changed.ImagePositionPatient = [x, y, z + 0.5]  # 20% of the 2.5 mm spacing
    error = refusal(datasets)
    assert_refused(error, "uneven-spacing", lidc[0].SeriesInstanceUID)


def test_sheared_positions_as_in_gantry_tilt(lidc: list[Dataset]) -> None:
    shift = 2.5 * math.tan(math.radians(5.0))
    datasets = copy.deepcopy(lidc)
    for k, ds in enumerate(datasets):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + k * shift, z]
    error = refusal(datasets)
    assert_refused(error, "gantry-tilt", lidc[0].SeriesInstanceUID)
    assert "5.00 degrees" in error.detail


def test_gantry_tilt_tag(lidc: list[Dataset]) -> None:
    datasets, changed = replaced(lidc, 0)
    changed.GantryDetectorTilt = 12.5
    assert_refused(refusal(datasets), "gantry-tilt", lidc[0].SeriesInstanceUID)


def test_mr_modality(lidc: list[Dataset]) -> None:
    datasets, changed = replaced(lidc, MIDDLE)
    changed.Modality = "MR"
    error = refusal(datasets)
    assert_refused(error, "wrong-modality", lidc[0].SeriesInstanceUID)
    assert "CT, MR" in error.detail


def test_truncated_native_pixels(lidc: list[Dataset]) -> None:
    datasets, changed = replaced(lidc, MIDDLE)
    changed.PixelData = changed.PixelData[: len(changed.PixelData) // 2]
    error = refusal(datasets)
    assert_refused(error, "undecodable-pixels", lidc[0].SeriesInstanceUID)
    assert changed.SOPInstanceUID in error.detail


@pytest.fixture(scope="module")
def jpeg2000(shared_data: Path) -> list[Dataset]:
    """The JPEG 2000 example with the UIDs its de-identification blanked put back."""
    datasets = read_series_dir(shared_data / "totalsegmentator-example" / "dicom")
    series_uid = generate_uid(entropy_srcs=["totalsegmentator-example", "series"])
    for ds in datasets:
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["totalsegmentator-example", "study"])
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    return datasets


@pytest.mark.parametrize("keep", [0.5, 0.05], ids=["half-codestream", "header-only"])
def test_truncated_jpeg2000_codestream(jpeg2000: list[Dataset], keep: float) -> None:
    datasets, changed = replaced(jpeg2000, 10)
    frame = next(generate_frames(changed.PixelData, number_of_frames=1))
    changed.PixelData = encapsulate([frame[: int(len(frame) * keep)]])
    error = refusal(datasets)
    assert_refused(error, "undecodable-pixels", jpeg2000[0].SeriesInstanceUID)
    assert "JPEG 2000" in error.detail
    assert changed.SOPInstanceUID in error.detail
    assert "pylibjpeg-openjpeg" in error.action
