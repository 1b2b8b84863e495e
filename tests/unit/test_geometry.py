"""Geometry model and series assembly on small synthetic series built in memory."""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    generate_uid,
)

from tools.imaging import pixels as pixels_module
from tools.imaging.geometry import Geometry
from tools.imaging.volume import (
    SeriesRefusedError,
    Volume,
    assemble_volume,
    group_by_series,
    read_series_dir,
)

pytestmark = pytest.mark.unit

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
ROWS, COLUMNS = 40, 32  # not square, so a swapped axis shows up; J2K needs >= 32 px
ROW_SPACING, COLUMN_SPACING = 0.8, 0.7  # PixelSpacing = [row spacing, column spacing]


def _normal(iop: tuple[float, ...]) -> np.ndarray:
    return np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))


def make_slice(
    position: tuple[float, float, float],
    fill: int,
    *,
    series_uid: str,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    frame_uid: str = "1.2.826.0.1.3680043.8.498.2",
    iop: tuple[float, ...] = AXIAL,
    instance_number: int = 1,
    intercept: float = -1024.0,
    slope: float = 1.0,
) -> Dataset:
    """One CT slice whose stored pixels are ``fill`` plus a column ramp (0..COLUMNS-1)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.Modality = "CT"
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
    ds.PixelSpacing = [ROW_SPACING, COLUMN_SPACING]
    ds.SliceThickness = 2.5
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = stored_pixels(fill).astype(np.int16).tobytes()
    return ds


def stored_pixels(fill: int) -> np.ndarray:
    return np.broadcast_to(fill + np.arange(COLUMNS), (ROWS, COLUMNS))


def make_series(
    count: int = 5,
    *,
    step: float = 2.5,
    iop: tuple[float, ...] = AXIAL,
    start: tuple[float, float, float] = (-20.0, -30.0, 100.0),
    series_uid: str | None = None,
) -> list[Dataset]:
    """Slices k = 0..count-1 at start + k*step*normal; slice k is filled with 1000 + 10k."""
    uid = series_uid or generate_uid()
    normal = _normal(iop)
    return [
        make_slice(tuple(np.asarray(start) + k * step * normal), 1000 + 10 * k, series_uid=uid, iop=iop, instance_number=k + 1)
        for k in range(count)
    ]


def refused(datasets: list[Dataset], **kwargs: object) -> SeriesRefusedError:
    with pytest.raises(SeriesRefusedError) as caught:
        assemble_volume(datasets, **kwargs)
    return caught.value


def oblique_geometry() -> Geometry:
    angle = math.radians(30)
    row = (math.cos(angle), math.sin(angle), 0.0)
    column = (0.0, 0.0, -1.0)
    normal = tuple(float(v) for v in np.cross(row, column))
    return Geometry(origin=(10.0, -5.0, 42.0), spacing=(0.7, 0.8, 2.5), direction=(row, column, normal), shape=(4, 8, 6))


# ---------------------------------------------------------------- Geometry


def test_affine_columns_are_scaled_direction_vectors() -> None:
    geometry = oblique_geometry()
    affine = geometry.affine()
    for axis in range(3):
        np.testing.assert_allclose(affine[:3, axis], np.asarray(geometry.direction[axis]) * geometry.spacing[axis])
    np.testing.assert_allclose(affine[:3, 3], geometry.origin)
    np.testing.assert_allclose(affine[3], [0, 0, 0, 1])


def test_index_patient_round_trip() -> None:
    geometry = oblique_geometry()
    indices = np.random.default_rng(0).uniform(-3, 10, size=(50, 3))
    points = geometry.index_to_patient(indices)
    np.testing.assert_allclose(geometry.patient_to_index(points), indices, atol=1e-9)
    single = geometry.index_to_patient(np.array([1.0, 2.0, 3.0]))
    assert single.shape == (3,)
    np.testing.assert_allclose(
        single,
        np.asarray(geometry.origin)
        + 1.0 * 0.7 * np.asarray(geometry.direction[0])
        + 2.0 * 0.8 * np.asarray(geometry.direction[1])
        + 3.0 * 2.5 * np.asarray(geometry.direction[2]),
    )


def test_slice_position_follows_slice_direction() -> None:
    geometry = oblique_geometry()
    for k in range(4):
        expected = np.asarray(geometry.origin) + k * 2.5 * np.asarray(geometry.direction[2])
        np.testing.assert_allclose(geometry.slice_position(k), expected)
    with pytest.raises(IndexError, match="outside"):
        geometry.slice_position(4)


@pytest.mark.parametrize(
    "changes",
    [
        {"spacing": (0.7, 0.0, 2.5)},
        {"direction": ((2.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))},
        {"shape": (0, 8, 6)},
    ],
)
def test_geometry_rejects_invalid_values(changes: dict[str, object]) -> None:
    values = oblique_geometry().model_dump() | changes
    with pytest.raises(ValidationError):
        Geometry(**values)


def test_geometry_is_frozen() -> None:
    with pytest.raises(ValidationError):
        oblique_geometry().origin = (0.0, 0.0, 0.0)  # type: ignore[misc]


# ---------------------------------------------------------------- assembly: good series


def test_head_first_sorted_by_position_not_instance_number() -> None:
    series = make_series(6)
    numbers = list(range(1, 7))
    random.Random(3).shuffle(numbers)
    for ds, number in zip(series, numbers, strict=True):
        ds.InstanceNumber = number
    shuffled = series[:]
    random.Random(4).shuffle(shuffled)
    volume = assemble_volume(shuffled)
    assert volume.sop_instance_uids == [ds.SOPInstanceUID for ds in series]
    assert volume.array.shape == (6, ROWS, COLUMNS)
    assert volume.array.dtype == np.int16
    for k in range(6):
        np.testing.assert_array_equal(volume.array[k], stored_pixels(1000 + 10 * k) - 1024)
    geometry = volume.geometry
    assert geometry.spacing == pytest.approx((COLUMN_SPACING, ROW_SPACING, 2.5))
    np.testing.assert_allclose(geometry.direction, [[1, 0, 0], [0, 1, 0], [0, 0, 1]], atol=1e-12)
    assert geometry.origin == pytest.approx((-20.0, -30.0, 100.0))
    assert volume.series_instance_uid == series[0].SeriesInstanceUID
    assert volume.frame_of_reference_uid == series[0].FrameOfReferenceUID
    assert volume.sop_class_uid == CTImageStorage
    assert volume.modality == "CT"


def test_feet_first_with_mirrored_rows_puts_superior_slice_first() -> None:
    # Some scanners write FFS axial images with the row direction towards the patient's
    # right; the normal then points to the feet and slice 0 is the most superior slice.
    ffs = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    uid = generate_uid()
    zs = [0.0, -2.5, -5.0, -7.5]
    series = [make_slice((0.0, 0.0, z), 1000 + i, series_uid=uid, iop=ffs, instance_number=4 - i) for i, z in enumerate(zs)]
    volume = assemble_volume(list(reversed(series)))
    geometry = volume.geometry
    np.testing.assert_allclose(geometry.direction[2], [0, 0, -1], atol=1e-12)
    assert geometry.origin[2] == pytest.approx(0.0)
    for k, ds in enumerate(series):
        assert volume.sop_instance_uids[k] == ds.SOPInstanceUID
        np.testing.assert_allclose(geometry.index_to_patient(np.array([[0, 0, k]]))[0], [float(v) for v in ds.ImagePositionPatient])
        assert volume.array[k, 0, 0] == 1000 + k - 1024
    # Column index increases towards the patient's right (-x).
    step = geometry.index_to_patient(np.array([1.0, 0, 0])) - geometry.index_to_patient(np.array([0.0, 0, 0]))
    np.testing.assert_allclose(step, [-COLUMN_SPACING, 0, 0])


def test_oblique_series_positions_match_every_slice() -> None:
    angle = math.radians(20)
    iop = (math.cos(angle), math.sin(angle), 0.0, 0.0, 0.0, -1.0)
    series = make_series(5, iop=iop, step=3.0)
    volume = assemble_volume(series[::-1])
    for k, ds in enumerate(series):
        np.testing.assert_allclose(volume.geometry.slice_position(k), [float(v) for v in ds.ImagePositionPatient], atol=1e-4)
    np.testing.assert_allclose(volume.geometry.direction[2], _normal(iop) / np.linalg.norm(_normal(iop)), atol=1e-5)


def test_rescale_applied_per_slice_as_float32() -> None:
    series = make_series(3)
    series[1].RescaleSlope = 2
    series[1].RescaleIntercept = -1000.5
    volume = assemble_volume(series)
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array[0], stored_pixels(1000) - 1024)
    np.testing.assert_allclose(volume.array[1], stored_pixels(1010) * 2 - 1000.5)


def test_values_beyond_int16_fall_back_to_float32() -> None:
    series = make_series(3)
    for ds in series:
        ds.PixelRepresentation = 0
        ds.PixelData = np.full((ROWS, COLUMNS), 65000, dtype=np.uint16).tobytes()
        ds.RescaleIntercept = 0
    volume = assemble_volume(series)
    assert volume.array.dtype == np.float32
    assert float(volume.array.max()) == 65000.0


def test_small_position_jitter_is_accepted() -> None:
    series = make_series(6)
    series[2].ImagePositionPatient = [-20.0, -30.0, 105.05]  # 2% of the step
    volume = assemble_volume(series)
    assert volume.geometry.spacing[2] == pytest.approx(2.5)


def test_single_slice_uses_slice_thickness() -> None:
    volume = assemble_volume(make_series(1))
    assert volume.geometry.shape == (1, ROWS, COLUMNS)
    assert volume.geometry.spacing[2] == pytest.approx(2.5)


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless], ids=["jpeg-ls", "jpeg2000"])
def test_compressed_slices_decode(syntax: str) -> None:
    series = make_series(3)
    expected = assemble_volume(series).array
    compressed = copy.deepcopy(series)
    for ds in compressed:
        ds.compress(syntax)
        assert ds.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(assemble_volume(compressed).array, expected)


def test_required_modality_none_accepts_mr() -> None:
    series = make_series(3)
    for ds in series:
        ds.Modality = "MR"
    assert assemble_volume(series, required_modality=None).modality == "MR"


# ---------------------------------------------------------------- assembly: refusals


def test_error_message_names_series_reason_and_remedy() -> None:
    series = make_series(5)
    del series[2]
    error = refused(series)
    assert isinstance(error, ValueError)
    assert error.reason == "missing-slices"
    assert error.series_instance_uid == series[0].SeriesInstanceUID
    message = str(error)
    assert series[0].SeriesInstanceUID in message
    assert "missing-slices" in message
    assert series[1].SOPInstanceUID in message and series[2].SOPInstanceUID in message
    assert "Fetch the complete series" in message


def _mixed_series(series: list[Dataset]) -> None:
    series[1].SeriesInstanceUID = generate_uid()


def _other_study(series: list[Dataset]) -> None:
    series[1].StudyInstanceUID = generate_uid()


def _mr(series: list[Dataset]) -> None:
    for ds in series:
        ds.Modality = "MR"


def _rotated(series: list[Dataset]) -> None:
    series[2].ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.99, 0.141067]


def _other_pixel_spacing(series: list[Dataset]) -> None:
    series[3].PixelSpacing = [0.9, 0.7]


def _other_matrix(series: list[Dataset]) -> None:
    series[3].Columns = COLUMNS + 2


def _no_position(series: list[Dataset]) -> None:
    del series[1].ImagePositionPatient


def _duplicate(series: list[Dataset]) -> None:
    twin = copy.deepcopy(series[2])
    twin.SOPInstanceUID = generate_uid()
    series.append(twin)


def _missing(series: list[Dataset]) -> None:
    del series[2]


def _uneven(series: list[Dataset]) -> None:
    series[2].ImagePositionPatient = [-20.0, -30.0, 105.5]  # 20% of the 2.5 mm step


def _sheared(series: list[Dataset]) -> None:
    shift = 2.5 * math.tan(math.radians(10))
    for k, ds in enumerate(series):
        ds.ImagePositionPatient = [-20.0 + k * shift, -30.0, 100.0 + 2.5 * k]


def _tilt_tag(series: list[Dataset]) -> None:
    for ds in series:
        ds.GantryDetectorTilt = 15


def _truncated_pixels(series: list[Dataset]) -> None:
    series[1].PixelData = series[1].PixelData[:20]


def _no_pixels(series: list[Dataset]) -> None:
    del series[1].PixelData


def _corrupt_jpeg2000(series: list[Dataset]) -> None:
    series[1].compress(JPEG2000Lossless)
    frame = next(generate_frames(series[1].PixelData, number_of_frames=1))
    series[1].PixelData = encapsulate([frame[:12]])


def _unknown_syntax(series: list[Dataset]) -> None:
    series[0].file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2


def _multi_frame(series: list[Dataset]) -> None:
    series[0].NumberOfFrames = 2


def _no_sop_uid(series: list[Dataset]) -> None:
    series[4].SOPInstanceUID = ""


def _other_frame_of_reference(series: list[Dataset]) -> None:
    series[4].FrameOfReferenceUID = generate_uid()


def _no_frame_of_reference(series: list[Dataset]) -> None:
    for ds in series:
        del ds.FrameOfReferenceUID


REFUSALS: list[tuple[str, Callable[[list[Dataset]], None], str]] = [
    ("mixed-series", _mixed_series, "group_by_series"),
    ("mixed-series", _other_study, "different studies"),
    ("wrong-modality", _mr, "MR"),
    ("mixed-orientation", _rotated, "localizer"),
    ("mixed-dimensions", _other_pixel_spacing, "pixel spacing"),
    ("mixed-dimensions", _other_matrix, f"{ROWS}x{COLUMNS + 2}"),
    ("no-geometry", _no_position, "Image Plane"),
    ("no-geometry", _no_frame_of_reference, "Frame of Reference"),
    ("duplicate-position", _duplicate, "share a position"),
    ("missing-slices", _missing, "5.00 mm"),
    ("uneven-spacing", _uneven, "tolerance 5%"),
    ("gantry-tilt", _sheared, "degrees"),
    ("gantry-tilt", _tilt_tag, "15.0 degrees"),
    ("undecodable-pixels", _truncated_pixels, "Explicit VR Little Endian"),
    ("undecodable-pixels", _no_pixels, "could not be decoded"),
    ("undecodable-pixels", _corrupt_jpeg2000, "JPEG 2000"),
    ("undecodable-pixels", _unknown_syntax, "1.2.840.10008.1.2.4.100"),
    ("multi-frame", _multi_frame, "multi-frame"),
    ("missing-identifiers", _no_sop_uid, "SOPInstanceUID"),
    ("mixed-frame-of-reference", _other_frame_of_reference, "frames of reference"),
]


@pytest.mark.parametrize(("reason", "damage", "hint"), REFUSALS, ids=[f"{r}-{d.__name__.strip('_')}" for r, d, _ in REFUSALS])
def test_refusals(reason: str, damage: Callable[[list[Dataset]], None], hint: str) -> None:
    series = make_series(5)
    series_uid = series[0].SeriesInstanceUID
    damage(series)
    error = refused(series)
    assert error.reason == reason
    assert series_uid in str(error)
    assert hint in str(error)
    assert error.detail and error.detail in str(error)


def test_empty_input_is_refused() -> None:
    error = refused([])
    assert error.reason == "empty"
    assert error.series_instance_uid == ""


def test_missing_codec_names_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unavailable:
        is_available = False

    series = make_series(3)
    for ds in series:
        ds.compress(JPEG2000Lossless)
    monkeypatch.setattr(pixels_module, "get_decoder", lambda uid: Unavailable())
    error = refused(series)
    assert error.reason == "undecodable-pixels"
    assert "JPEG 2000 Image Compression (Lossless Only)" in str(error)
    assert "pylibjpeg-openjpeg" in str(error)


def test_gap_factor_and_tolerance_are_configurable() -> None:
    series = make_series(6)
    series[2].ImagePositionPatient = [-20.0, -30.0, 105.5]
    assert assemble_volume(series, spacing_tolerance=0.25).geometry.shape[0] == 6
    del series[4]
    assert refused(series, spacing_tolerance=0.25).reason == "missing-slices"
    assert assemble_volume(series, spacing_tolerance=1.5, gap_factor=3.0).geometry.shape[0] == 5


def test_volume_checks_shapes() -> None:
    geometry = oblique_geometry()
    with pytest.raises(ValueError, match="does not match"):
        Volume(np.zeros((3, 8, 6), np.int16), geometry, "1.2", "1.3", "1.4", "CT", ["1"] * 3, CTImageStorage)


# ---------------------------------------------------------------- reading folders


def test_read_series_dir_reads_nested_files_and_skips_others(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    series = make_series(3)
    (tmp_path / "nested").mkdir()
    for k, ds in enumerate(series):
        folder = tmp_path / "nested" if k else tmp_path
        ds.save_as(folder / f"slice{k}.dcm", enforce_file_format=True)
    (tmp_path / "notes.txt").write_text("not dicom")
    with caplog.at_level(logging.WARNING, logger="tools.imaging.volume"):
        datasets = read_series_dir(tmp_path)
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(ds.SOPInstanceUID for ds in series)
    assert "notes.txt" in caplog.text
    assert assemble_volume(datasets).sop_instance_uids == [ds.SOPInstanceUID for ds in series]


def test_read_series_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_series_dir(tmp_path / "absent")
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="No DICOM files"):
        read_series_dir(tmp_path)
    with pytest.raises(NotADirectoryError):
        read_series_dir(tmp_path / "readme.txt")


def test_group_by_series_splits_and_keeps_order() -> None:
    first, second = make_series(3), make_series(2)
    mixed = [second[0], first[0], first[1], second[1], first[2]]
    groups = group_by_series(mixed)
    assert list(groups) == [second[0].SeriesInstanceUID, first[0].SeriesInstanceUID]
    assert groups[first[0].SeriesInstanceUID] == first
    assert groups[second[0].SeriesInstanceUID] == second
