"""Gathering training data from the real Orthanc and FHIR server.

Eight small phantom studies (unique patient ids and seeds), one situation each:

    701  agent RTSTRUCT + SEG, approved (ImagingStudy available, both series listed)
    702  agent RTSTRUCT, approved, feet-first CT
    703  a person's RTSTRUCT (ROIs MANUAL, other manufacturer) as a new series, no FHIR approval
    704  a person's RTSTRUCT drawn in another Frame of Reference
    705  a person's RTSTRUCT whose CT lacks 3 of the instances it references
    706  agent RTSTRUCT never approved (ImagingStudy still registered)
    707  a person's RTSTRUCT without lung ROIs
    708  a person's RTSTRUCT that a reviewer rejected (ApprovalStatus REJECTED)

Only 701 (its SEG: voxel exact beats RTSTRUCT), 702 and 703 become cases; every other label
series is reported with its reason. The PACS is shared by the session, so every check is per
study.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid

from agent.parts import fhir_client, pacs_client
from agent.seed import seed_datasets
from agent.settings import Settings
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.phantom import Phantom, PhantomSpec, make_phantom, write_phantom
from tools.results.common import DerivedObject
from tools.results.fhir_report import updated_imaging_study
from tools.results.rtstruct import build_rtstruct
from tools.results.seg import build_seg
from tools.segmentation.base import STRUCTURES, SegmentationResult, StructureMask
from tools.training.config import TooFewCasesError, TrainConfig
from tools.training.dataset import case_arrays, read_case
from tools.training.gather import GatherReport, gather_cases, label_studies
from tools.training.pairing import TrainingPair
from tools.training.train import train
from tools.workflow.registration import Registered

pytestmark = pytest.mark.integration

PIXDIM = (6.0, 6.0, 6.0)


@dataclass
class Study:
    phantom: Phantom
    volume: Volume
    datasets: list[Dataset]
    seeded: Registered


def _result(phantom: Phantom) -> SegmentationResult:
    return SegmentationResult(
        engine="lung-threshold",
        engine_version="gather-test",
        structures=[
            StructureMask(structure=STRUCTURES["left-lung"], mask=phantom.left_lung, confidence=1.0),
            StructureMask(structure=STRUCTURES["right-lung"], mask=phantom.right_lung, confidence=1.0),
        ],
    )


def _study(settings: Settings, folder: Path, seed: int, position: str = "HFS", drop: int = 0) -> Study:
    spec = PhantomSpec(
        slices=24, rows=64, columns=64, pixel_spacing_mm=6.0, slice_thickness_mm=12.5, seed=seed,
        patient_position=position, patient_id=f"GATHER-{seed}",
    )
    phantom = make_phantom(spec)
    write_phantom(phantom, folder / str(seed))
    datasets = read_series_dir(folder / str(seed))
    volume = assemble_volume(datasets)
    stored = [ds for ds in datasets if str(ds.SOPInstanceUID) not in set(volume.sop_instance_uids[len(datasets) - drop :])]
    [seeded] = seed_datasets(settings, stored)
    return Study(phantom, volume, datasets, seeded)


def _store(settings: Settings, *objects: Dataset) -> None:
    with pacs_client(settings) as pacs:
        result = pacs.store(list(objects))
    assert result.ok, result.failed


def _approve(settings: Settings, study: Study, objects: list[DerivedObject]) -> None:
    """What the agent's writer does after a reviewer approves: ImagingStudy available, result series listed."""
    with fhir_client(settings) as fhir:
        current = fhir.read("ImagingStudy", study.seeded.imaging_study_id)
        fhir.update(updated_imaging_study(current, objects), if_match=current.meta.versionId)


def _as_person(rtstruct: Dataset, seed: int, frame_of_reference: str | None = None) -> Dataset:
    """A radiologist's structure set saved as a new series by a planning system."""
    ds = copy.deepcopy(rtstruct)
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["gather test series", str(seed)])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["gather test sop", str(seed)])
    ds.Manufacturer = "Hospital planning system"
    ds.ManufacturerModelName = "TPS"
    del ds.ContributingEquipmentSequence
    ds.SeriesDescription = "Lungs corrected by radiologist"
    ds.StructureSetLabel = "Corrected"
    for roi in ds.StructureSetROISequence:
        roi.ROIGenerationAlgorithm = "MANUAL"
        del roi.ROIGenerationDescription
    if frame_of_reference is not None:
        ds.FrameOfReferenceUID = frame_of_reference
        for frame in ds.ReferencedFrameOfReferenceSequence:
            frame.FrameOfReferenceUID = frame_of_reference
        for roi in ds.StructureSetROISequence:
            roi.ReferencedFrameOfReferenceUID = frame_of_reference
    return ds


@pytest.fixture(scope="module")
def studies(live_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Study]:
    folder = tmp_path_factory.mktemp("gather-dicom")
    made: dict[int, Study] = {}

    made[701] = _study(live_settings, folder, 701)
    rt, rt_obj = build_rtstruct(made[701].datasets, made[701].volume, _result(made[701].phantom))
    seg, seg_obj = build_seg(made[701].datasets, made[701].volume, _result(made[701].phantom))
    _store(live_settings, rt, seg)
    _approve(live_settings, made[701], [rt_obj, seg_obj])

    made[702] = _study(live_settings, folder, 702, position="FFS")
    rt, rt_obj = build_rtstruct(made[702].datasets, made[702].volume, _result(made[702].phantom))
    _store(live_settings, rt)
    _approve(live_settings, made[702], [rt_obj])

    made[703] = _study(live_settings, folder, 703)
    rt, _ = build_rtstruct(made[703].datasets, made[703].volume, _result(made[703].phantom))
    _store(live_settings, _as_person(rt, 703))

    made[704] = _study(live_settings, folder, 704)
    rt, _ = build_rtstruct(made[704].datasets, made[704].volume, _result(made[704].phantom))
    _store(live_settings, _as_person(rt, 704, frame_of_reference=generate_uid(entropy_srcs=["other frame", "704"])))

    made[705] = _study(live_settings, folder, 705, drop=3)
    rt, _ = build_rtstruct(made[705].datasets, made[705].volume, _result(made[705].phantom))
    _store(live_settings, _as_person(rt, 705))

    made[706] = _study(live_settings, folder, 706)
    rt, _ = build_rtstruct(made[706].datasets, made[706].volume, _result(made[706].phantom))
    _store(live_settings, rt)

    made[707] = _study(live_settings, folder, 707)
    rt, _ = build_rtstruct(made[707].datasets, made[707].volume, _result(made[707].phantom))
    person = _as_person(rt, 707)
    for roi, name in zip(person.StructureSetROISequence, ("Heart", "SpinalCord"), strict=True):
        roi.ROIName = name
    del person.RTROIObservationsSequence
    _store(live_settings, person)

    made[708] = _study(live_settings, folder, 708)
    rt, _ = build_rtstruct(made[708].datasets, made[708].volume, _result(made[708].phantom))
    rejected = _as_person(rt, 708)
    rejected.ApprovalStatus = "REJECTED"
    rejected.ReviewDate, rejected.ReviewTime, rejected.ReviewerName = "20240102", "120000", "Reviewer^Test"
    _store(live_settings, rejected)
    return made


@pytest.fixture(scope="module")
def gathered(live_settings: Settings, studies: dict[int, Study], tmp_path_factory: pytest.TempPathFactory) -> tuple[GatherReport, Path]:
    cases_dir = tmp_path_factory.mktemp("gather-cases")
    uids = [s.phantom.study_instance_uid for s in studies.values()]
    with pacs_client(live_settings) as pacs, fhir_client(live_settings) as fhir:
        return gather_cases(pacs, fhir, cases_dir, study_uids=uids, pixdim=PIXDIM), cases_dir


def _reasons(report: GatherReport, study: Study) -> list[str]:
    return [s.reason for s in report.skipped if s.study_instance_uid == study.phantom.study_instance_uid]


def _pairs(report: GatherReport, study: Study) -> list[TrainingPair]:
    return [p for p in report.pairs if p.study_instance_uid == study.phantom.study_instance_uid]


def test_studies_with_label_series_are_found_by_qido(live_settings: Settings, studies: dict[int, Study]) -> None:
    with pacs_client(live_settings) as pacs:
        found = set(label_studies(pacs))
    assert {s.phantom.study_instance_uid for s in studies.values()} <= found


def test_approved_agent_output_prefers_the_seg(gathered: tuple[GatherReport, Path], studies: dict[int, Study]) -> None:
    report, _ = gathered
    study = studies[701]
    [pair] = _pairs(report, study)
    assert (pair.label_kind, pair.origin) == ("SEG", "approved-agent-output")
    assert pair.ct_series_instance_uid == study.volume.series_instance_uid
    assert pair.frame_of_reference_uid == study.volume.frame_of_reference_uid
    [reason] = _reasons(report, study)
    assert f"already has training labels from SEG series {pair.label_series_instance_uid}" in reason
    case = read_case(pair.case_path)
    _, expected = case_arrays(study.volume, study.phantom.left_lung, study.phantom.right_lung, PIXDIM)
    np.testing.assert_array_equal(case.label, expected)  # SEG is voxel exact
    assert case.info.origin == "approved-agent-output" and case.info.label_sop_instance_uid == pair.label_sop_instance_uid


@pytest.mark.parametrize(("seed", "origin"), [(702, "approved-agent-output"), (703, "human-made")])
def test_rtstruct_pairs_become_cases(gathered: tuple[GatherReport, Path], studies: dict[int, Study], seed: int, origin: str) -> None:
    report, _ = gathered
    study = studies[seed]
    [pair] = _pairs(report, study)
    assert (pair.label_kind, pair.origin) == ("RTSTRUCT", origin)
    assert _reasons(report, study) == []
    case = read_case(pair.case_path)
    _, expected = case_arrays(study.volume, study.phantom.left_lung, study.phantom.right_lung, PIXDIM)
    for value in (1, 2):
        got, want = case.label == value, expected == value
        assert 2 * (got & want).sum() / (got.sum() + want.sum()) > 0.97


@pytest.mark.parametrize(
    ("seed", "expected"),
    [
        (704, "frame of reference"),
        (705, "3 of the 24 CT instances it references are missing"),
        (706, "never approved: ImagingStudy/"),
        (707, "no lung ROI (ROIs: Heart, SpinalCord)"),
        (708, "ApprovalStatus is REJECTED"),
    ],
)
def test_mismatches_are_reported_not_taken(gathered: tuple[GatherReport, Path], studies: dict[int, Study], seed: int, expected: str) -> None:
    report, cases_dir = gathered
    study = studies[seed]
    assert _pairs(report, study) == []
    [reason] = _reasons(report, study)
    assert expected in reason
    assert not (cases_dir / f"{study.volume.series_instance_uid}.npz").exists()


def test_second_gather_reuses_cases_and_too_few_cases_quotes_the_reasons(
    live_settings: Settings, gathered: tuple[GatherReport, Path], studies: dict[int, Study], tmp_path: Path
) -> None:
    report, cases_dir = gathered
    uids = [s.phantom.study_instance_uid for s in studies.values()]
    with pacs_client(live_settings) as pacs, fhir_client(live_settings) as fhir:
        again = gather_cases(pacs, fhir, cases_dir, study_uids=uids, pixdim=PIXDIM)
    assert sorted(p.case_path for p in again.pairs) == sorted(p.case_path for p in report.pairs)
    assert all(p.reused for p in again.pairs)
    assert [str(s) for s in again.skipped] == [str(s) for s in report.skipped]
    with pytest.raises(TooFewCasesError) as error:
        train(cases_dir, tmp_path / "run", TrainConfig(min_cases=4, pixdim=PIXDIM), show_progress=False)
    message = str(error.value)
    assert "found 3 training case(s)" in message and "at least 4" in message
    assert "frame of reference" in message and "never approved" in message
