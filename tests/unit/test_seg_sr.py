"""DICOM SEG and Comprehensive 3D SR writers on the synthetic phantom (head- and feet-first).

Checked: dciodvfy (dicom3tools) finds no error; highdicom reads the SEG back to exactly the
source masks, placed in the source geometry; the SR reads back with the volumes and the
SEG reference; fixed ``created`` gives identical bytes; bad inputs are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from tests.dicom_checks import dataset_errors, dciodvfy_errors
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.phantom import Phantom, PhantomSpec, make_phantom, write_phantom
from tools.results.common import MANUFACTURER, dataset_bytes, sha256_hex
from tools.results.seg import ResultBuildError, build_seg
from tools.results.sr import build_sr
from tools.segmentation.base import STRUCTURES, SegmentationResult, StructureMask

pytestmark = pytest.mark.unit

CREATED = datetime(2024, 5, 1, 12, 30, 15)
# Given out of order, one value with commas (two GTVs left out): written sorted, commas kept apart.
PARAMETERS = {
    "lung_threshold_hu": "-403",
    "excluded_region": "ROI 'GTV-1' of RTSTRUCT 1.2.3, ROI 'GTV-2' of RTSTRUCT 1.2.3",
    "air_threshold_hu": "-400",
}


@dataclass(repr=False)
class Case:
    phantom: Phantom
    datasets: list[Dataset]
    volume: Volume
    result: SegmentationResult
    volumes_ml: dict[str, float]


def lung_result(left: np.ndarray, right: np.ndarray) -> SegmentationResult:
    return SegmentationResult(
        engine="lung-threshold",
        engine_version="1.0.0",
        structures=[
            StructureMask(STRUCTURES["left-lung"], left, 0.99),
            StructureMask(STRUCTURES["right-lung"], right, 0.98),
        ],
        parameters=PARAMETERS,
    )


def voxel_ml(volume: Volume) -> float:
    return float(np.prod(volume.geometry.spacing)) / 1000.0


@pytest.fixture(scope="module", params=["HFS", "FFS"])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    spec = PhantomSpec(
        slices=40, rows=128, columns=128, pixel_spacing_mm=3.0, slice_thickness_mm=7.5,
        patient_position=request.param,
    )
    phantom = make_phantom(spec)
    folder = tmp_path_factory.mktemp(f"phantom-{request.param}")
    write_phantom(phantom, folder)
    datasets = read_series_dir(folder)
    volume = assemble_volume(datasets)
    result = lung_result(phantom.left_lung, phantom.right_lung)
    volumes_ml = {item.structure.key: float(item.mask.sum()) * voxel_ml(volume) for item in result.structures}
    return Case(phantom, datasets, volume, result, volumes_ml)


@pytest.fixture(scope="module")
def seg(case: Case) -> Dataset:
    return build_seg(case.datasets, case.volume, case.result, created=CREATED)[0]


@pytest.fixture(scope="module")
def sr(case: Case, seg: Dataset) -> Dataset:
    return build_sr(case.datasets, case.volume, case.result, seg, case.volumes_ml, created=CREATED)[0]


def test_phantom_volume_matches_phantom_arrays(case: Case) -> None:
    # The readback checks below compare with the phantom's masks in array order.
    assert case.volume.sop_instance_uids == case.phantom.sop_instance_uids
    assert np.array_equal(case.volume.array, case.phantom.hu)


def test_seg_passes_dciodvfy(seg: Dataset, tmp_path: Path) -> None:
    assert dataset_errors(seg, tmp_path, "seg.dcm") == []


def test_sr_passes_dciodvfy(sr: Dataset, tmp_path: Path) -> None:
    assert dataset_errors(sr, tmp_path, "sr.dcm") == []


def test_seg_reads_back_to_the_same_masks(case: Case, seg: Dataset) -> None:
    read = hd.seg.segread(BytesIO(dataset_bytes(seg)))
    pixels = read.get_pixels_by_source_instance(
        case.volume.sop_instance_uids, segment_numbers=[1, 2], assert_missing_frames_are_empty=True
    )
    assert pixels.shape == (*case.volume.array.shape, 2)
    assert np.array_equal(pixels[..., 0].astype(bool), case.phantom.left_lung)
    assert np.array_equal(pixels[..., 1].astype(bool), case.phantom.right_lung)


def test_seg_places_masks_in_the_source_geometry(case: Case, seg: Dataset) -> None:
    """Map every SEG voxel through highdicom's own affine into our grid: same voxels."""
    read = hd.seg.segread(BytesIO(dataset_bytes(seg)))
    seg_volume = read.get_volume(segment_numbers=[1, 2], combine_segments=True)
    for number, expected in ((1, case.phantom.left_lung), (2, case.phantom.right_lung)):
        indices = np.argwhere(seg_volume.array == number)  # (slice, row, column) in SEG volume
        patient = np.c_[indices, np.ones(len(indices))] @ seg_volume.affine.T
        ours = case.volume.geometry.patient_to_index(patient[:, :3])  # (column, row, slice)
        ijk = np.rint(ours).astype(int)
        assert np.abs(ours - ijk).max() < 1e-3
        mapped = np.zeros(case.volume.array.shape, dtype=bool)
        mapped[ijk[:, 2], ijk[:, 1], ijk[:, 0]] = True
        assert np.array_equal(mapped, expected)


def test_seg_describes_segments_with_codes_algorithm_and_colour(case: Case, seg: Dataset) -> None:
    assert seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == case.volume.study_instance_uid
    assert seg.FrameOfReferenceUID == case.volume.frame_of_reference_uid
    assert seg.SeriesInstanceUID != case.volume.series_instance_uid
    assert seg.PatientID == case.phantom.spec.patient_id
    segments = {int(item.SegmentNumber): item for item in seg.SegmentSequence}
    for number, key in ((1, "left-lung"), (2, "right-lung")):
        spec, item = STRUCTURES[key], segments[number]
        assert item.SegmentLabel == spec.roi_name
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator) == ("91723000", "SCT")
        kind = item.SegmentedPropertyTypeCodeSequence[0]
        assert (kind.CodeValue, kind.CodingSchemeDesignator) == (spec.snomed_code, "SCT")
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("lung-threshold", "1.0.0")
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123104"  # Morphological operations
        rgb = hd.color.CIELabColor.from_dicom_value(tuple(item.RecommendedDisplayCIELabValue)).to_rgb()
        assert np.abs(np.subtract(rgb, spec.color_rgb)).max() <= 1
    referenced = {
        str(ref.ReferencedSOPInstanceUID)
        for series in seg.ReferencedSeriesSequence
        for ref in series.ReferencedInstanceSequence
    }
    assert referenced == set(case.volume.sop_instance_uids)
    equipment = [item for item in seg.ContributingEquipmentSequence if item.Manufacturer == MANUFACTURER]
    assert len(equipment) == 1
    assert equipment[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    assert equipment[0].ManufacturerModelName == "lung-threshold"


def test_seg_names_the_algorithm_with_its_parameters(seg: Dataset) -> None:
    """Segmentation Algorithm Identification (PS3.3 C.8.20.2): name, version, "name=value" sorted by name."""
    read = pydicom.dcmread(BytesIO(dataset_bytes(seg)))
    for item in read.SegmentSequence:
        [algorithm] = item.SegmentationAlgorithmIdentificationSequence
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("lung-threshold", "1.0.0")
        assert algorithm.AlgorithmParameters == (
            "air_threshold_hu=-400,"
            "excluded_region=ROI 'GTV-1' of RTSTRUCT 1.2.3; ROI 'GTV-2' of RTSTRUCT 1.2.3,"
            "lung_threshold_hu=-403"
        )


def test_sr_names_the_algorithm_with_name_version_and_parameters(sr: Dataset) -> None:
    """TID 4019 in every measurement group: Algorithm Name, Version and one Parameters item each."""
    read = pydicom.dcmread(BytesIO(dataset_bytes(sr)))
    [measurements] = [item for item in read.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "126010"]
    groups = measurements.ContentSequence
    assert len(groups) == 2
    for group in groups:
        text = [
            (str(item.ConceptNameCodeSequence[0].CodeValue), str(item.TextValue))
            for item in group.ContentSequence
            if item.ValueType == "TEXT" and item.RelationshipType == "HAS CONCEPT MOD"
        ]
        assert ("111001", "lung-threshold") in text  # Algorithm Name
        assert ("111003", "1.0.0") in text  # Algorithm Version
        assert [value for code, value in text if code == "111002"] == [  # Algorithm Parameters, sorted
            "air_threshold_hu=-400",
            "excluded_region=ROI 'GTV-1' of RTSTRUCT 1.2.3, ROI 'GTV-2' of RTSTRUCT 1.2.3",
            "lung_threshold_hu=-403",
        ]


def test_parameter_names_that_cannot_be_read_back_are_refused(case: Case) -> None:
    result = lung_result(case.phantom.left_lung, case.phantom.right_lung)
    result.parameters = {"HU threshold": "-400"}
    with pytest.raises(ResultBuildError, match=r"\['HU threshold'\].*lower-case identifiers"):
        build_seg(case.datasets, case.volume, result, created=CREATED)


def test_seg_bytes_are_reproducible(case: Case, seg: Dataset) -> None:
    again, described = build_seg(list(reversed(case.datasets)), case.volume, case.result, created=CREATED)
    data = dataset_bytes(again)
    assert data == dataset_bytes(seg)
    assert described.sha256 == sha256_hex(data)
    assert described.size_bytes == len(data)
    later, later_described = build_seg(case.datasets, case.volume, case.result, created=datetime(2025, 1, 2, 3, 4, 5))
    assert later_described.sop_instance_uid == described.sop_instance_uid
    assert later_described.series_instance_uid == described.series_instance_uid
    assert later_described.sha256 != described.sha256
    assert str(later.ContentDate) == "20250102"


def test_sr_reads_back_with_volumes_and_seg_reference(case: Case, seg: Dataset, sr: Dataset) -> None:
    read = hd.sr.srread(BytesIO(dataset_bytes(sr)))
    assert read.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert read.StudyInstanceUID == case.volume.study_instance_uid
    groups = read.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    tracking = {str(item.SegmentNumber): str(item.TrackingUID) for item in seg.SegmentSequence}
    found: dict[str, float] = {}
    for group in groups:
        reference = group.referenced_segment[0]
        assert reference.referenced_sop_instance_uid == seg.SOPInstanceUID
        number = reference.referenced_segment_numbers[0]
        assert str(group.tracking_uid) == tracking[str(number)]
        site = group.finding_sites[0].value
        [measurement] = group.get_measurements()
        assert measurement.name.value == "118565006"
        assert (measurement.unit.value, measurement.unit.scheme_designator) == ("ml", "UCUM")
        found[site.value] = float(measurement.value)
        assert number == (1 if site.value == "44029006" else 2)
    assert found == pytest.approx(
        {"44029006": case.volumes_ml["left-lung"], "3341006": case.volumes_ml["right-lung"]}, abs=1e-3
    )
    evidence = {
        str(ref.ReferencedSOPInstanceUID)
        for study in read.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence


def test_sr_observer_is_the_engine_device(sr: Dataset) -> None:
    observer = {
        str(item.ConceptNameCodeSequence[0].CodeMeaning): item
        for item in sr.ContentSequence
        if item.RelationshipType == "HAS OBS CONTEXT"
    }
    assert observer["Observer Type"].ConceptCodeSequence[0].CodeValue == "121007"  # Device
    assert observer["Device Observer Name"].TextValue == "lung-threshold"
    assert sr.VerificationFlag == "UNVERIFIED"
    assert any(item.Manufacturer == MANUFACTURER for item in sr.ContributingEquipmentSequence)


def test_sr_bytes_are_reproducible(case: Case, seg: Dataset, sr: Dataset) -> None:
    again, described = build_sr(case.datasets, case.volume, case.result, seg, case.volumes_ml, created=CREATED)
    assert dataset_bytes(again) == dataset_bytes(sr)
    assert described.sha256 == sha256_hex(dataset_bytes(sr))
    assert described.sop_instance_uid != seg.SOPInstanceUID


def test_overlapping_and_empty_structures_round_trip(case: Case, tmp_path: Path) -> None:
    left = case.phantom.left_lung | case.phantom.right_lung  # overlaps the right lung entirely
    empty = np.zeros_like(left)
    for result in (lung_result(left, case.phantom.right_lung), lung_result(case.phantom.left_lung, empty)):
        seg, _ = build_seg(case.datasets, case.volume, result, created=CREATED)
        path = tmp_path / "seg.dcm"
        path.write_bytes(dataset_bytes(seg))
        assert dciodvfy_errors(path) == []
        pixels = hd.seg.segread(BytesIO(dataset_bytes(seg))).get_pixels_by_source_instance(
            case.volume.sop_instance_uids, segment_numbers=[1, 2], assert_missing_frames_are_empty=True
        )
        for n, item in enumerate(result.structures):
            assert np.array_equal(pixels[..., n].astype(bool), item.mask)


def test_refuses_mismatched_inputs(case: Case, seg: Dataset) -> None:
    series = case.volume.series_instance_uid
    with pytest.raises(ResultBuildError, match=series):
        build_seg(case.datasets[1:], case.volume, case.result, created=CREATED)
    wrong_shape = lung_result(case.phantom.left_lung[:-1], case.phantom.right_lung[:-1])
    with pytest.raises(ResultBuildError, match="left-lung"):
        build_seg(case.datasets, case.volume, wrong_shape, created=CREATED)
    with pytest.raises(ResultBuildError, match="missing: \\['right-lung'\\]"):
        build_sr(case.datasets, case.volume, case.result, seg, {"left-lung": 1.0}, created=CREATED)
    with pytest.raises(ResultBuildError, match="non-negative"):
        build_sr(case.datasets, case.volume, case.result, seg, {"left-lung": -1.0, "right-lung": 1.0})
    other = pydicom.dcmread(BytesIO(dataset_bytes(seg)))
    other.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.4"
    with pytest.raises(ResultBuildError, match="1.2.3.4"):
        build_sr(case.datasets, case.volume, case.result, other, case.volumes_ml)


def test_the_assessment_sr_reads_back_with_its_references_and_has_no_dciodvfy_error(tmp_path: Path) -> None:
    """The AI result assessment record (tools/results/assessment.py): accepted / rejected, by whom, why."""
    from datetime import UTC, datetime

    import highdicom as hd

    from tests.dicom_checks import dciodvfy_errors
    from tools.results.assessment import build_assessment_sr

    results = []
    for kind, sop_class in (("RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.3"), ("SEG", "1.2.840.10008.5.1.4.1.1.66.4")):
        ds = pydicom.Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, pydicom.uid.generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1", pydicom.uid.generate_uid()
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "P-1", "Test^Patient", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20261202", "100000", "1", "", ""
        ds.Modality = kind
        results.append(ds)
    decided = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    sr = build_assessment_sr(
        results, "rejected", reviewer_name="Dr. Ana Lee", reviewer_id="dr-lee", issuer="urn:imaging-agent:local",
        decided_at=decided, reason="misses the left base", reason_code=("missed-lung", "Lung (or part of it) missed"),
    )
    path = tmp_path / "assessment.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    back = hd.sr.srread(path)
    assert back.StudyInstanceUID == "1.2.826.0.1.3680043.10.1" and back.VerificationFlag == "VERIFIED"
    referenced = [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for container in back.ContentSequence if container.ValueType == "CONTAINER"
        for item in container.ContentSequence if item.ValueType == "COMPOSITE"
    ]
    assert referenced == [r.SOPInstanceUID for r in results]
    values = [
        str(item.get("TextValue", "")) or (item.ConceptCodeSequence[0].CodeValue if "ConceptCodeSequence" in item else "")
        for container in back.ContentSequence
        for item in (container.get("ContentSequence") or [container])
    ]
    assert "REJECTED" in values and "misses the left base" in values and "dr-lee" in values
    assert "missed-lung" in values  # the rejection reason's code, beside the reviewer's words
    again = build_assessment_sr(
        results, "rejected", reviewer_name="Dr. Ana Lee", reviewer_id="dr-lee", issuer="urn:imaging-agent:local",
        decided_at=decided, reason="misses the left base", reason_code=("missed-lung", "Lung (or part of it) missed"),
    )
    assert again.SOPInstanceUID == sr.SOPInstanceUID, "a retry of one decision is the same object"
    # ... with the same bytes (a resumed write step stores it again, and the PACS compares its sha256).
    assert dataset_bytes(again) == dataset_bytes(sr)
