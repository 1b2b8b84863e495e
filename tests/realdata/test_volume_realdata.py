"""Series assembly on real CT: LIDC-IDRI-0001 (feet first, uncompressed) and the
TotalSegmentator example (JPEG 2000 lossless).

Data: LIDC-IDRI (CC BY 3.0; Armato SG III et al., Med Phys 38(2):915-931, 2011; TCIA) and
TotalSegmentator (CC BY 4.0; Wasserthal J et al., Radiol Artif Intell 5(5):e230024, 2023).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from scipy import ndimage

from tools.imaging.volume import SeriesRefusedError, Volume, assemble_volume, read_series_dir

pytestmark = pytest.mark.realdata

LIDC_SLICES = 133


@pytest.fixture(scope="module")
def lidc_datasets(shared_data: Path) -> list[Dataset]:
    return read_series_dir(shared_data / "lidc-idri-0001" / "dicom")


@pytest.fixture(scope="module")
def lidc_volume(lidc_datasets: list[Dataset]) -> Volume:
    return assemble_volume(lidc_datasets)


def test_lidc_shape_and_identity(lidc_volume: Volume, lidc_datasets: list[Dataset]) -> None:
    assert lidc_volume.array.shape == (LIDC_SLICES, 512, 512)
    assert lidc_volume.array.dtype == np.int16  # slope 1, intercept -1024
    assert lidc_volume.geometry.spacing == pytest.approx((0.703125, 0.703125, 2.5))
    assert lidc_volume.series_instance_uid == lidc_datasets[0].SeriesInstanceUID
    assert lidc_volume.study_instance_uid == lidc_datasets[0].StudyInstanceUID
    assert lidc_volume.frame_of_reference_uid == lidc_datasets[0].FrameOfReferenceUID
    assert lidc_volume.modality == "CT"
    assert sorted(lidc_volume.sop_instance_uids) == sorted(ds.SOPInstanceUID for ds in lidc_datasets)
    assert {ds.PatientPosition for ds in lidc_datasets} == {"FFS"}


def test_every_slice_sits_at_its_own_image_position(lidc_volume: Volume, lidc_datasets: list[Dataset]) -> None:
    by_uid = {ds.SOPInstanceUID: ds for ds in lidc_datasets}
    geometry = lidc_volume.geometry
    for k, uid in enumerate(lidc_volume.sop_instance_uids):
        ipp = [float(v) for v in by_uid[uid].ImagePositionPatient]
        np.testing.assert_allclose(geometry.index_to_patient(np.array([[0.0, 0.0, k]]))[0], ipp, atol=1e-3)
        np.testing.assert_allclose(geometry.slice_position(k), ipp, atol=1e-3)
    # The last pixel of a slice: column and row directions each carry their own spacing.
    corner = geometry.index_to_patient(np.array([511.0, 511.0, 0.0]))
    first = [float(v) for v in by_uid[lidc_volume.sop_instance_uids[0]].ImagePositionPatient]
    np.testing.assert_allclose(corner, np.asarray(first) + [511 * 0.703125, 511 * 0.703125, 0.0], atol=1e-3)


def test_slice_pixels_come_from_the_instance_named_for_them(lidc_volume: Volume, lidc_datasets: list[Dataset]) -> None:
    by_uid = {ds.SOPInstanceUID: ds for ds in lidc_datasets}
    for k, uid in enumerate(lidc_volume.sop_instance_uids):
        source = by_uid[uid]
        expected = source.pixel_array.astype(np.int32) * int(source.RescaleSlope) + int(source.RescaleIntercept)
        np.testing.assert_array_equal(lidc_volume.array[k], expected)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def test_airway_reaches_the_superior_end_not_the_inferior_end(lidc_volume: Volume) -> None:
    """Anatomy proves the stack is not flipped: the air tree (trachea + bronchi + lungs) leaves
    the scan at its superior end through the trachea, a small airway near the midline, while the
    inferior end is upper abdomen below the lung bases. "Superior" is taken from the geometry
    (patient +z in LPS), so a volume whose pixels and positions disagree fails here."""
    hu = lidc_volume.array
    geometry = lidc_volume.geometry
    body = np.stack([ndimage.binary_fill_holes(_largest_component(s > -500)) for s in hu])
    air_tree = _largest_component((hu < -800) & body)

    centre = np.array([[255.5, 255.5, k] for k in range(hu.shape[0])])
    z = geometry.index_to_patient(centre)[:, 2]
    superior, inferior = int(np.argmax(z)), int(np.argmin(z))
    assert z[superior] - z[inferior] == pytest.approx(330.0)

    assert air_tree[superior].any(), "no airway in the most superior slice"
    pixel_area = geometry.spacing[0] * geometry.spacing[1]
    airway_area = air_tree[superior].sum() * pixel_area
    assert airway_area < 1000, f"superior airway is {airway_area:.0f} mm^2, larger than a trachea"
    rows, columns = np.nonzero(air_tree[superior])
    body_rows, body_columns = np.nonzero(body[superior])
    airway_x = geometry.index_to_patient(np.array([columns.mean(), rows.mean(), superior]))[0]
    body_x = geometry.index_to_patient(np.array([body_columns.mean(), body_rows.mean(), superior]))[0]
    assert abs(airway_x - body_x) < 30, "superior airway is not near the left-right midline"

    tree_z = z[np.flatnonzero(air_tree.any(axis=(1, 2)))]
    assert tree_z.min() - z[inferior] > 30, "the lungs reach the inferior end of a chest CT"
    lung_fraction = [(air_tree[k].sum() / body[k].sum()) for k in range(hu.shape[0])]
    assert max(lung_fraction) > 0.2  # the lungs themselves are in the tree


@pytest.fixture(scope="module")
def jpeg2000_folder(shared_data: Path) -> Path:
    return shared_data / "totalsegmentator-example" / "dicom"


def with_identifiers(datasets: list[Dataset]) -> list[Dataset]:
    """The example's de-identification blanked Study/Series/SOP UIDs; restore them as a
    re-identifying export would (SOP UIDs from the PS3.10 file meta, which must match)."""
    study_uid = generate_uid(entropy_srcs=["totalsegmentator-example", "study"])
    series_uid = generate_uid(entropy_srcs=["totalsegmentator-example", "series"])
    for ds in datasets:
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    return datasets


def test_jpeg2000_example_without_uids_is_refused(jpeg2000_folder: Path) -> None:
    with pytest.raises(SeriesRefusedError) as caught:
        assemble_volume(read_series_dir(jpeg2000_folder))
    assert caught.value.reason == "missing-identifiers"
    assert "SeriesInstanceUID" in str(caught.value)


def test_jpeg2000_series_decodes(jpeg2000_folder: Path) -> None:
    datasets = with_identifiers(read_series_dir(jpeg2000_folder))
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in datasets} == {"1.2.840.10008.1.2.4.90"}
    volume = assemble_volume(datasets)
    assert volume.array.shape == (20, 512, 512)
    # Slices are 3 mm thick but reconstructed every 2 mm: spacing comes from positions.
    assert volume.geometry.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    np.testing.assert_allclose(volume.geometry.direction[2], [0, 0, 1])
    hu = volume.array
    assert -1100 <= hu.min() and hu.max() <= 3100
    body = hu[:, 200:300, 200:300]
    assert -200 < float(np.median(body)) < 200  # upper abdomen: soft tissue around the centre
    assert (hu < -900).mean() > 0.2  # air around the patient
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    for k, uid in enumerate(volume.sop_instance_uids):
        np.testing.assert_allclose(volume.geometry.slice_position(k), [float(v) for v in by_uid[uid].ImagePositionPatient], atol=1e-3)
