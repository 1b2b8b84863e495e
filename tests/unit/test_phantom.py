"""The synthetic chest CT phantom: anatomy, exact masks, DICOM validity and geometry."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from scipy import ndimage

from tests.dicom_checks import dciodvfy_errors, dciodvfy_report
from tools.phantom import (
    MANUFACTURER,
    Phantom,
    PhantomSpec,
    Tissue,
    load_masks,
    make_phantom,
    save_masks,
    write_phantom,
)

pytestmark = pytest.mark.unit

# Default spacing on a small grid: the anatomy is scaled down to the 100 mm field of view.
SMALL = PhantomSpec(slices=24, rows=128, columns=128)
# Small grid with coarse spacing: adult-size anatomy at low resolution.
COARSE = PhantomSpec(
    slices=30, rows=128, columns=128, pixel_spacing_mm=3.125, slice_thickness_mm=10.0
)


@pytest.fixture(scope="module")
def small() -> Phantom:
    return make_phantom(SMALL)


@pytest.fixture(scope="module", params=["HFS", "FFS"])
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    spec = COARSE.model_copy(update={"patient_position": request.param})
    phantom = make_phantom(spec)
    paths = write_phantom(phantom, tmp_path_factory.mktemp(request.param))
    return phantom, paths


def _median_hu(phantom: Phantom, tissue: Tissue) -> float:
    voxels = phantom.hu[phantom.labels == tissue]
    assert voxels.size > 0, f"no {tissue.name} voxels"
    return float(np.median(voxels))


def _patient_points(datasets: list[pydicom.Dataset], mask: np.ndarray) -> np.ndarray:
    """LPS coordinates (mm) of the mask's voxels, using only the files' geometry tags."""
    k, r, c = np.nonzero(mask)
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    row_dir, col_dir = iop[:3], iop[3:]
    row_spacing, col_spacing = (float(v) for v in datasets[0].PixelSpacing)
    ipp = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    return ipp[k] + np.outer(c * col_spacing, row_dir) + np.outer(r * row_spacing, col_dir)


def _sorted_by_normal(paths: list[Path]) -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(p) for p in paths]
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    return sorted(
        datasets, key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient]))
    )


def test_default_spec_is_a_full_chest_ct_made_in_seconds() -> None:
    spec = PhantomSpec()
    start = time.perf_counter()
    phantom = make_phantom(spec)
    elapsed = time.perf_counter() - start

    assert phantom.hu.shape == (120, 512, 512) and phantom.hu.dtype == np.int16
    assert phantom.left_lung.dtype == np.bool_ and phantom.left_lung.shape == phantom.hu.shape
    assert elapsed < 30.0, f"make_phantom took {elapsed:.1f} s"
    voxel_ml = 0.78 * 0.78 * 2.5 / 1000.0
    left_ml, right_ml = phantom.left_lung.sum() * voxel_ml, phantom.right_lung.sum() * voxel_ml
    assert 1200 < left_ml < right_ml < 3500, (left_ml, right_ml)
    # Vessels are inside the lung masks and thin enough to be a small fraction of them.
    vessels = np.isin(phantom.labels, [Tissue.VESSEL_LEFT, Tissue.VESSEL_RIGHT])
    assert np.all((phantom.left_lung | phantom.right_lung)[vessels])
    assert 0.005 < vessels.sum() / (phantom.left_lung | phantom.right_lung).sum() < 0.1
    assert _median_hu(phantom, Tissue.VESSEL_LEFT) > 0
    # HFS: index k ascends from inferior to superior; the apices are 2-5 cm below the top slice.
    lung_slices = np.flatnonzero((phantom.left_lung | phantom.right_lung).any(axis=(1, 2)))
    top_gap_mm = (119 - lung_slices.max()) * 2.5
    assert 20.0 <= top_gap_mm <= 50.0, top_gap_mm


@pytest.mark.parametrize(
    ("tissue", "low", "high"),
    [
        (Tissue.LUNG_LEFT, -870, -830),
        (Tissue.LUNG_RIGHT, -870, -830),
        (Tissue.SOFT_TISSUE, 30, 50),
        (Tissue.HEART, 30, 50),
        (Tissue.FAT, -120, -80),
        (Tissue.BONE_CORTICAL, 400, 800),
        (Tissue.OUTSIDE_AIR, -1010, -985),
        (Tissue.AIRWAY, -1024, -985),
        (Tissue.BOWEL_GAS, -1024, -985),
        (Tissue.TABLE_SHELL, -100, 200),
    ],
)
def test_tissue_hounsfield_units(small: Phantom, tissue: Tissue, low: float, high: float) -> None:
    assert low <= _median_hu(small, tissue) <= high


def test_noise_is_as_specified(small: Phantom) -> None:
    # Outside air far from the body is flat apart from the noise.
    corner = small.hu[:, :10, :10].astype(np.float64)
    assert 10.0 < corner.std() < 14.0
    quiet = make_phantom(SMALL.model_copy(update={"noise_hu": 0.0}))
    assert np.all(quiet.hu[quiet.labels == Tissue.OUTSIDE_AIR] == -1000)


def test_lung_mask_medians_and_exactness(small: Phantom) -> None:
    lungs = small.left_lung | small.right_lung
    assert small.left_lung.any() and small.right_lung.any()
    assert not np.any(small.left_lung & small.right_lung)
    assert -880 <= np.median(small.hu[lungs]) <= -820
    left = np.isin(small.labels, [Tissue.LUNG_LEFT, Tissue.VESSEL_LEFT])
    right = np.isin(small.labels, [Tissue.LUNG_RIGHT, Tissue.VESSEL_RIGHT])
    assert np.array_equal(small.left_lung, left)
    assert np.array_equal(small.right_lung, right)


def test_airways_and_bowel_gas_are_not_lung(small: Phantom) -> None:
    lungs = small.left_lung | small.right_lung
    # Air enclosed by the body (not touching the volume's edges) is airway or bowel gas.
    air = small.hu < -950
    components, count = ndimage.label(air)
    edge = np.unique(
        np.concatenate([components[:, 0].ravel(), components[:, -1].ravel(),
                        components[:, :, 0].ravel(), components[:, :, -1].ravel()])
    )
    inside_air = (components > 0) & ~np.isin(components, edge)
    assert inside_air.sum() > 0
    assert not np.any(inside_air & lungs)
    assert not np.any(lungs[np.isin(small.labels, [Tissue.AIRWAY, Tissue.BOWEL_GAS])])
    # The trachea is midline air in the top (most superior) slice, above the lungs.
    top = small.labels.shape[0] - 1
    assert not lungs[top].any()
    trachea_cols = np.flatnonzero(small.labels[top] == Tissue.AIRWAY) % small.spec.columns
    assert trachea_cols.size > 0
    assert abs(trachea_cols.mean() - (small.spec.columns - 1) / 2) < 2
    # Bowel gas only in the lowest slices, below every lung slice's centre.
    gas_slices = np.flatnonzero((small.labels == Tissue.BOWEL_GAS).any(axis=(1, 2)))
    assert gas_slices.size > 0 and gas_slices.max() < small.spec.slices // 4


def test_written_files_match_the_phantom(written: tuple[Phantom, list[Path]]) -> None:
    phantom, paths = written
    assert len(paths) == phantom.spec.slices
    datasets = _sorted_by_normal(paths)
    # Array order is the geometric order a loader gives.
    assert [ds.SOPInstanceUID for ds in datasets] == phantom.sop_instance_uids
    assert [pydicom.dcmread(p).SOPInstanceUID for p in paths] == phantom.sop_instance_uids
    for k, ds in enumerate(datasets):
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == CTImageStorage
        assert ds.Modality == "CT" and ds.Manufacturer == MANUFACTURER
        assert ds.PatientPosition == phantom.spec.patient_position
        assert ds.StudyInstanceUID == phantom.study_instance_uid
        assert ds.SeriesInstanceUID == phantom.series_instance_uid
        assert ds.FrameOfReferenceUID == phantom.frame_of_reference_uid
        assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        assert np.array_equal(hu, phantom.hu[k])
    superior_first = sorted(datasets, key=lambda ds: -float(ds.ImagePositionPatient[2]))
    assert superior_first[0].InstanceNumber == 1


def test_left_lung_is_at_patient_left_and_anatomy_is_physically_placed(
    written: tuple[Phantom, list[Path]],
) -> None:
    phantom, paths = written
    datasets = _sorted_by_normal(paths)
    left = _patient_points(datasets, phantom.left_lung).mean(axis=0)
    right = _patient_points(datasets, phantom.right_lung).mean(axis=0)
    heart = _patient_points(datasets, phantom.labels == Tissue.HEART).mean(axis=0)
    spine = _patient_points(datasets, phantom.labels == Tissue.BONE_MEDULLARY).mean(axis=0)
    trachea = _patient_points(datasets, phantom.labels == Tissue.AIRWAY)
    gas = _patient_points(datasets, phantom.labels == Tissue.BOWEL_GAS).mean(axis=0)
    assert left[0] > right[0] + 100  # LPS: +x is the patient's left
    assert heart[0] > 0 and heart[1] < spine[1]  # heart left of midline, anterior to the spine
    assert trachea[:, 2].max() > left[2] + 50  # the trachea comes in from above
    assert gas[2] < min(left[2], right[2]) - 50  # bowel gas below the lungs


def test_hfs_and_ffs_place_the_same_anatomy_at_the_same_patient_coordinates(tmp_path: Path) -> None:
    centroids = {}
    for position in ("HFS", "FFS"):
        phantom = make_phantom(COARSE.model_copy(update={"patient_position": position}))
        datasets = _sorted_by_normal(write_phantom(phantom, tmp_path / position))
        centroids[position] = [
            _patient_points(datasets, mask).mean(axis=0)
            for mask in (phantom.left_lung, phantom.right_lung)
        ]
        iop = [float(v) for v in datasets[0].ImageOrientationPatient]
        assert iop == ([1, 0, 0, 0, 1, 0] if position == "HFS" else [-1, 0, 0, 0, 1, 0])
    for hfs, ffs in zip(centroids["HFS"], centroids["FFS"], strict=True):
        assert np.allclose(hfs, ffs, atol=0.5)


@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_written_file_passes_dciodvfy(position: str, tmp_path: Path) -> None:
    # A non-ASCII name checks the UTF-8 Specific Character Set too.
    spec = SMALL.model_copy(
        update={"patient_position": position, "patient_name": "Fantôme^Thorax"}
    )
    paths = write_phantom(make_phantom(spec), tmp_path)
    middle = paths[len(paths) // 2]
    report = dciodvfy_report(middle)
    assert "CTImage" in report
    assert dciodvfy_errors(middle) == [], report


def test_same_spec_gives_same_uids_pixels_and_files(tmp_path: Path) -> None:
    first, second = make_phantom(SMALL), make_phantom(SMALL)
    assert np.array_equal(first.hu, second.hu)
    assert (first.study_instance_uid, first.series_instance_uid, first.frame_of_reference_uid) == (
        second.study_instance_uid,
        second.series_instance_uid,
        second.frame_of_reference_uid,
    )
    assert first.sop_instance_uids == second.sop_instance_uids
    assert len(set(first.sop_instance_uids)) == SMALL.slices
    a = write_phantom(first, tmp_path / "a")
    b = write_phantom(second, tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]

    other = make_phantom(SMALL.model_copy(update={"seed": 1}))
    assert other.study_instance_uid != first.study_instance_uid
    assert not set(other.sop_instance_uids) & set(first.sop_instance_uids)
    assert not np.array_equal(other.hu, first.hu)

    given = make_phantom(SMALL.model_copy(update={"study_instance_uid": "1.2.3.4"}))
    assert given.study_instance_uid == "1.2.3.4"
    assert given.series_instance_uid != first.series_instance_uid


def test_masks_round_trip(small: Phantom, tmp_path: Path) -> None:
    path = tmp_path / "masks" / "lungs.npz"
    save_masks(small, path)
    masks = load_masks(path)
    assert masks.series_instance_uid == small.series_instance_uid
    assert np.array_equal(masks.left_lung, small.left_lung)
    assert np.array_equal(masks.right_lung, small.right_lung)


def test_load_masks_names_the_bad_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_masks(tmp_path / "missing.npz")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, left=np.zeros((2, 2, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"wrong\.npz.*'right'"):
        load_masks(wrong)


def test_write_rejects_a_phantom_that_does_not_match_its_spec(
    small: Phantom, tmp_path: Path
) -> None:
    broken = Phantom(
        hu=small.hu[:-1],
        left_lung=small.left_lung[:-1],
        right_lung=small.right_lung[:-1],
        spec=small.spec,
        study_instance_uid=small.study_instance_uid,
        series_instance_uid=small.series_instance_uid,
        frame_of_reference_uid=small.frame_of_reference_uid,
        sop_instance_uids=small.sop_instance_uids,
        labels=small.labels[:-1],
    )
    with pytest.raises(ValueError, match=small.series_instance_uid):
        write_phantom(broken, tmp_path)
    assert not any(tmp_path.iterdir())
