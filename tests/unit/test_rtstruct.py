"""RT Structure Set writer: dciodvfy-clean, round trips, geometry, references, determinism.

Independent checks where it matters: contour points are tested against the source images'
own Image Position/Orientation (Patient) tags, and anatomy is defined in patient
coordinates (the phantom's lungs, an ellipsoid), not through the writer's geometry code.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

from tests.dicom_checks import dciodvfy_errors
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.phantom import Phantom, PhantomSpec, make_phantom, write_phantom
from tools.results.common import dataset_bytes, sha256_hex
from tools.results.rtstruct import RTStructError, build_rtstruct, rtstruct_masks
from tools.segmentation.base import STRUCTURES, SegmentationResult, StructureMask

pytestmark = pytest.mark.unit

CREATED = datetime(2024, 5, 6, 7, 8, 9)
ENGINE, ENGINE_VERSION = "lung-threshold", "1.0.0"
# Small but adult-sized: 384 mm field of view, 40 slices of 7.5 mm.
SPEC = dict(slices=40, rows=128, columns=128, pixel_spacing_mm=3.0, slice_thickness_mm=7.5)


@dataclass
class Series:
    directory: Path
    sources: list[Dataset]
    volume: Volume


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def reread(data: bytes) -> Dataset:
    return pydicom.dcmread(BytesIO(data))


def lungs(phantom: Phantom) -> SegmentationResult:
    return SegmentationResult(
        engine=ENGINE,
        engine_version=ENGINE_VERSION,
        structures=[
            StructureMask(STRUCTURES["left-lung"], phantom.left_lung, 0.95),
            StructureMask(STRUCTURES["right-lung"], phantom.right_lung, 0.95),
        ],
    )


def one_structure(mask: np.ndarray, key: str = "left-lung", version: str = ENGINE_VERSION) -> SegmentationResult:
    return SegmentationResult(ENGINE, version, [StructureMask(STRUCTURES[key], mask, 1.0)])


def contour_points(item: Dataset) -> np.ndarray:
    return np.asarray([float(v) for v in item.ContourData]).reshape(-1, 3)


def ct_series(
    shape: tuple[int, int, int],
    iop: tuple[float, ...],
    pixel_spacing: tuple[float, float],
    origin: tuple[float, float, float],
    slice_step: float,
) -> list[Dataset]:
    """A CT series built here, so that its geometry is whatever the test needs."""
    slices, rows, columns = shape
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    normal = np.cross(iop[:3], iop[3:])
    datasets = []
    for k in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.PatientName = "Test^Geometry"
        ds.PatientID = "GEOM-1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(origin) + k * slice_step * normal]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
        ds.PixelSpacing = [str(v) for v in pixel_spacing]
        ds.SliceThickness = str(slice_step)
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
        ds.PixelData = np.zeros((rows, columns), dtype="<i2").tobytes()
        datasets.append(ds)
    return datasets


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Phantom, Series]]:
    out: dict[str, tuple[Phantom, Series]] = {}
    for position in ("HFS", "FFS"):
        phantom = make_phantom(PhantomSpec(patient_position=position, **SPEC))
        directory = tmp_path_factory.mktemp(f"phantom-{position}")
        write_phantom(phantom, directory)
        sources = read_series_dir(directory)
        out[position] = (phantom, Series(directory, sources, assemble_volume(sources)))
    return out


@pytest.fixture(scope="module", params=["HFS", "FFS"])
def built(request: pytest.FixtureRequest, phantoms: dict[str, tuple[Phantom, Series]]) -> tuple[Phantom, Series, bytes]:
    phantom, series = phantoms[request.param]
    ds, described = build_rtstruct(series.sources, series.volume, lungs(phantom), created=CREATED)
    data = dataset_bytes(ds)
    assert described.sha256 == sha256_hex(data)
    return phantom, series, data


# ---------------------------------------------------------------- validity


def test_phantom_rtstruct_passes_dciodvfy(built: tuple[Phantom, Series, bytes], tmp_path: Path) -> None:
    _, _, data = built
    path = tmp_path / "rtstruct.dcm"
    path.write_bytes(data)
    assert dciodvfy_errors(path) == []


def test_rtstruct_with_an_empty_roi_passes_dciodvfy(phantoms: dict[str, tuple[Phantom, Series]], tmp_path: Path) -> None:
    phantom, series = phantoms["HFS"]
    result = lungs(phantom)
    result.structures[1] = StructureMask(STRUCTURES["right-lung"], np.zeros_like(phantom.right_lung), 0.0)
    ds, _ = build_rtstruct(series.sources, series.volume, result, created=CREATED)
    back = reread(dataset_bytes(ds))
    assert [r.ROIName for r in back.StructureSetROISequence] == ["Lung_L", "Lung_R"]
    assert "ContourSequence" not in back.ROIContourSequence[1]
    path = tmp_path / "empty-roi.dcm"
    path.write_bytes(dataset_bytes(ds))
    assert dciodvfy_errors(path) == []


def test_every_ds_value_fits_the_vr(built: tuple[Phantom, Series, bytes]) -> None:
    _, _, data = built
    back = reread(data)
    checked = 0
    for roi in back.ROIContourSequence:
        for item in roi.ContourSequence:
            raw = item.get_item("ContourData")
            assert isinstance(raw, RawDataElement)
            values = raw.value.decode("ascii").rstrip(" ").split("\\")
            assert max(len(v) for v in values) <= 16
            assert len(values) == 3 * int(item.NumberOfContourPoints)
            checked += len(values)
    assert checked > 1000


# ---------------------------------------------------------------- content


def test_header_references_and_rois(built: tuple[Phantom, Series, bytes]) -> None:
    phantom, series, data = built
    ds = reread(data)
    source = series.sources[0]
    assert ds.SOPClassUID == RTStructureSetStorage
    assert ds.Modality == "RTSTRUCT"
    assert ds.StudyInstanceUID == phantom.study_instance_uid
    assert ds.SeriesInstanceUID != phantom.series_instance_uid
    assert (ds.PatientName, ds.PatientID, ds.StudyDate) == (source.PatientName, source.PatientID, source.StudyDate)
    assert (ds.StructureSetDate, ds.StructureSetTime) == ("20240506", "070809")
    assert (ds.InstanceCreationDate, ds.InstanceCreationTime) == ("20240506", "070809")
    assert len(ds.StructureSetLabel) <= 16

    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == phantom.frame_of_reference_uid
    (study,) = frame.RTReferencedStudySequence
    assert study.ReferencedSOPInstanceUID == phantom.study_instance_uid
    (referenced_series,) = study.RTReferencedSeriesSequence
    assert referenced_series.SeriesInstanceUID == phantom.series_instance_uid
    images = {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in referenced_series.ContourImageSequence}
    assert images == {(CTImageStorage, uid) for uid in phantom.sop_instance_uids}

    rois = ds.StructureSetROISequence
    assert [(r.ROINumber, r.ROIName) for r in rois] == [(1, "Lung_L"), (2, "Lung_R")]
    for roi in rois:
        assert roi.ReferencedFrameOfReferenceUID == phantom.frame_of_reference_uid
        assert roi.ROIGenerationAlgorithm == "AUTOMATIC"
        assert ENGINE in roi.ROIGenerationDescription and ENGINE_VERSION in roi.ROIGenerationDescription
    colours = [(c.ReferencedROINumber, [int(v) for v in c.ROIDisplayColor]) for c in ds.ROIContourSequence]
    assert colours == [(1, list(STRUCTURES["left-lung"].color_rgb)), (2, list(STRUCTURES["right-lung"].color_rgb))]
    for number, observation in enumerate(ds.RTROIObservationsSequence, start=1):
        assert observation.ReferencedROINumber == number
        assert observation.RTROIInterpretedType == "ORGAN"
        assert observation.ROIInterpreter == ""
    codes = [o.RTROIIdentificationCodeSequence[0].CodeValue for o in ds.RTROIObservationsSequence]
    assert codes == ["44029006", "3341006"]
    (equipment,) = ds.ContributingEquipmentSequence
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    assert any(ENGINE in str(v) for v in equipment.SoftwareVersions)


def test_contours_reference_their_slice_and_lie_on_its_plane(built: tuple[Phantom, Series, bytes]) -> None:
    """Checked against each referenced CT image's own Image Plane tags, to 0.01 mm."""
    _, series, data = built
    ds = reread(data)
    planes = {
        str(s.SOPInstanceUID): (
            np.asarray(s.ImagePositionPatient, dtype=float),
            np.cross(np.asarray(s.ImageOrientationPatient[:3], float), np.asarray(s.ImageOrientationPatient[3:], float)),
        )
        for s in series.sources
    }
    contours = 0
    for roi in ds.ROIContourSequence:
        for item in roi.ContourSequence:
            assert item.ContourGeometricType == "CLOSED_PLANAR"
            (image,) = item.ContourImageSequence
            assert image.ReferencedSOPClassUID == CTImageStorage
            position, normal = planes[image.ReferencedSOPInstanceUID]
            points = contour_points(item)
            assert len(points) == item.NumberOfContourPoints >= 3
            assert np.abs((points - position) @ normal).max() <= 0.01
            contours += 1
    assert contours > 40


def test_round_trip_dice_on_phantom_lungs(built: tuple[Phantom, Series, bytes]) -> None:
    phantom, series, data = built
    masks = rtstruct_masks(reread(data), series.volume)
    assert dice(masks["Lung_L"], phantom.left_lung) >= 0.99
    assert dice(masks["Lung_R"], phantom.right_lung) >= 0.99
    # Marching-squares contours and the pixel-centre even-odd rasteriser are exact inverses.
    assert np.array_equal(masks["Lung_L"], phantom.left_lung)
    assert np.array_equal(masks["Lung_R"], phantom.right_lung)


def test_right_lung_is_at_negative_x_head_and_feet_first(built: tuple[Phantom, Series, bytes]) -> None:
    """The phantom's FFS series is written with IOP [-1,0,0,...]: orientation tags decide."""
    _, _, data = built
    ds = reread(data)
    x_of = {
        roi_number: np.concatenate([contour_points(i)[:, 0] for i in roi.ContourSequence])
        for roi_number, roi in ((r.ReferencedROINumber, r) for r in ds.ROIContourSequence)
    }
    assert x_of[2].max() < 0 < x_of[1].min()  # 2 = Lung_R, 1 = Lung_L


def test_donut_and_two_islands_on_one_slice_come_back_exactly(tmp_path: Path) -> None:
    sources = ct_series((5, 64, 80), (1, 0, 0, 0, 1, 0), (0.7, 0.7), (-28.0, -22.4, 100.0), 2.0)
    volume = assemble_volume(sources)
    rows, columns = np.ogrid[:64, :80]
    ring = ((rows - 30) ** 2 + (columns - 30) ** 2 <= 18**2) & ((rows - 30) ** 2 + (columns - 30) ** 2 > 8**2)
    islands = ((rows - 12) ** 2 + (columns - 65) ** 2 <= 36) | ((rows - 48) ** 2 + (columns - 66) ** 2 <= 25)
    mask = np.zeros((5, 64, 80), dtype=bool)
    mask[2] = ring | islands
    ds, _ = build_rtstruct(sources, volume, one_structure(mask), created=CREATED)
    data = dataset_bytes(ds)
    back = reread(data)
    items = back.ROIContourSequence[0].ContourSequence
    assert len(items) == 4  # outer boundary, hole, two islands
    assert {i.ContourImageSequence[0].ReferencedSOPInstanceUID for i in items} == {volume.sop_instance_uids[2]}
    assert np.array_equal(rtstruct_masks(back, volume)["Lung_L"], mask)
    path = tmp_path / "donut.dcm"
    path.write_bytes(data)
    assert dciodvfy_errors(path) == []


@pytest.mark.parametrize(
    ("name", "iop", "pixel_spacing"),
    [
        ("non-square axial", (1, 0, 0, 0, 1, 0), (0.6, 0.9)),
        (
            "axial rotated 30 degrees in plane",
            (math.cos(math.radians(30)), math.sin(math.radians(30)), 0, -math.sin(math.radians(30)), math.cos(math.radians(30)), 0),
            (0.8, 0.8),
        ),
        ("sagittal-like", (0, 1, 0, 0, 0, -1), (0.9, 0.6)),
        ("double-oblique", (0.8660254, 0.5, 0, -0.3, 0.5196152, -0.8), (0.7, 1.1)),
    ],
)
def test_contours_stay_on_the_anatomy_in_any_orientation(
    name: str, iop: tuple[float, ...], pixel_spacing: tuple[float, float], tmp_path: Path
) -> None:
    """An ellipsoid defined in patient coordinates is masked on the grid (voxel centres inside),
    written, and its contour points must lie on the ellipsoid's surface in patient space."""
    shape = (24, 70, 60)
    normal = np.cross(iop[:3], iop[3:])
    centre = np.array([10.0, -15.0, 40.0])
    # Place the grid so that it is centred on the anatomy, whatever its orientation.
    extent = (np.asarray(iop[:3]) * pixel_spacing[1] * (shape[2] - 1) + np.asarray(iop[3:]) * pixel_spacing[0] * (shape[1] - 1)
              + normal * 2.0 * (shape[0] - 1))
    sources = ct_series(shape, iop, pixel_spacing, tuple(centre - extent / 2), 2.0)
    random.Random(7).shuffle(sources)
    volume = assemble_volume(sources)
    semi_axes = np.array([18.0, 14.0, 16.0])
    k, r, c = np.indices(shape)
    xyz = volume.geometry.index_to_patient(np.column_stack([c.ravel(), r.ravel(), k.ravel()]).astype(float))
    mask = (((xyz - centre) / semi_axes) ** 2).sum(axis=1).reshape(shape) <= 1.0
    assert mask.sum() > 1000, name

    ds, _ = build_rtstruct(sources, volume, one_structure(mask), created=CREATED)
    data = dataset_bytes(ds)
    back = reread(data)
    points = np.concatenate([contour_points(i) for i in back.ROIContourSequence[0].ContourSequence])
    radius = np.sqrt((((points - centre) / semi_axes) ** 2).sum(axis=1))
    # Contours run half a pixel outside the boundary voxels' centres: at most ~1.1 mm here.
    assert np.abs(radius - 1.0).max() < 1.2 / semi_axes.min(), name
    assert np.array_equal(rtstruct_masks(back, volume)["Lung_L"], mask), name
    path = tmp_path / "oblique.dcm"
    path.write_bytes(data)
    assert dciodvfy_errors(path) == []


# ---------------------------------------------------------------- determinism


def test_same_inputs_give_the_same_uids_and_bytes(phantoms: dict[str, tuple[Phantom, Series]]) -> None:
    phantom, series = phantoms["FFS"]
    first, first_described = build_rtstruct(series.sources, series.volume, lungs(phantom), created=CREATED)
    shuffled = list(series.sources)
    random.Random(3).shuffle(shuffled)
    second, second_described = build_rtstruct(shuffled, series.volume, lungs(phantom), created=CREATED)
    assert first_described == second_described
    assert dataset_bytes(first) == dataset_bytes(second)

    later, later_described = build_rtstruct(series.sources, series.volume, lungs(phantom), created=datetime(2025, 1, 1))
    assert later_described.sop_instance_uid == first_described.sop_instance_uid
    assert later_described.series_instance_uid == first_described.series_instance_uid
    assert later_described.sha256 != first_described.sha256

    other = SegmentationResult(ENGINE, "2.0.0", lungs(phantom).structures)
    _, other_described = build_rtstruct(series.sources, series.volume, other, created=CREATED)
    assert other_described.sop_instance_uid != first_described.sop_instance_uid
    assert other_described.series_instance_uid != first_described.series_instance_uid


# ---------------------------------------------------------------- refusals


def test_mask_on_another_grid_is_refused(phantoms: dict[str, tuple[Phantom, Series]]) -> None:
    phantom, series = phantoms["HFS"]
    result = one_structure(phantom.left_lung[:, :, :-1])
    with pytest.raises(RTStructError, match=series.volume.series_instance_uid) as caught:
        build_rtstruct(series.sources, series.volume, result, created=CREATED)
    assert "shape" in str(caught.value)


def test_missing_source_instance_is_refused(phantoms: dict[str, tuple[Phantom, Series]]) -> None:
    phantom, series = phantoms["HFS"]
    with pytest.raises(RTStructError, match="not among the") as caught:
        build_rtstruct(series.sources[1:], series.volume, lungs(phantom), created=CREATED)
    assert series.volume.series_instance_uid in str(caught.value)


def test_repeated_roi_names_are_refused(phantoms: dict[str, tuple[Phantom, Series]]) -> None:
    phantom, series = phantoms["HFS"]
    twice = StructureMask(STRUCTURES["left-lung"], phantom.left_lung, 1.0)
    with pytest.raises(RTStructError, match="Lung_L"):
        build_rtstruct(series.sources, series.volume, SegmentationResult(ENGINE, ENGINE_VERSION, [twice, twice]))


def test_result_without_structures_is_refused(phantoms: dict[str, tuple[Phantom, Series]]) -> None:
    _, series = phantoms["HFS"]
    with pytest.raises(RTStructError, match="no structure") as caught:
        build_rtstruct(series.sources, series.volume, SegmentationResult(ENGINE, ENGINE_VERSION, []))
    assert series.volume.series_instance_uid in str(caught.value)


def test_reader_refuses_another_frame_of_reference(built: tuple[Phantom, Series, bytes]) -> None:
    _, series, data = built
    ds = reread(data)
    ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID = generate_uid()
    with pytest.raises(RTStructError, match="frame of reference"):
        rtstruct_masks(ds, series.volume)


# ---------------------------------------------------------------- interop


def test_rt_utils_reads_names_and_masks(built: tuple[Phantom, Series, bytes], tmp_path: Path) -> None:
    """rt-utils 1.2.7 (a dev dependency) as a reader: same ROI names, contours, anatomy."""
    import rt_utils  # a dev dependency; the suite installs it, so this test never skips

    phantom, series, data = built
    path = tmp_path / "rtstruct.dcm"
    path.write_bytes(data)
    loaded = rt_utils.RTStructBuilder.create_from(dicom_series_path=str(series.directory), rt_struct_path=str(path))
    assert loaded.get_roi_names() == ["Lung_L", "Lung_R"]
    ours = reread(data)
    assert [len(r.ContourSequence) for r in loaded.ds.ROIContourSequence] == [
        len(r.ContourSequence) for r in ours.ROIContourSequence
    ]
    # rt-utils orders slices its own way and fills polygons boundary-inclusive after rounding
    # to whole pixels, so its masks are a little larger: compare by SOP Instance UID.
    index = {uid: k for k, uid in enumerate(series.volume.sop_instance_uids)}
    order = [index[str(s.SOPInstanceUID)] for s in loaded.series_data]
    for name, truth in (("Lung_L", phantom.left_lung), ("Lung_R", phantom.right_lung)):
        theirs = np.moveaxis(loaded.get_roi_mask_by_name(name), 2, 0)
        assert dice(theirs, truth[order]) >= 0.9, name
