"""A reviewer corrects a contour, then approves: the corrected result is what the PACS and FHIR get.

Against the real Orthanc and FHIR server. The reviewer erases part of the left lung on three axial
planes; the job rebuilds RTSTRUCT, SEG, SR, measurements and QA from the corrected masks, asks for
approval again under new UIDs and hashes, and on approval writes exactly that: the RTSTRUCT in the
PACS rasterises to the corrected mask voxel for voxel, the left lung's volume in FHIR drops by the
erased volume, the assessment record says "modified" and names the corrected objects, and
Provenance names the corrector as author and the AI's result as what the report derives from; and
`imaging-agent train` gathers the corrected masks, as a person's, for training.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.parts import fhir_client, pacs_client
from agent.runtime import AgentRuntime
from agent.settings import Settings
from tests.identities import principal, signed_decision
from tests.integration.listings import assessment_instances, pacs_listing
from tests.integration.workflow_helpers import SeededStudy, phantom_spec, result_instances, retire, seed_phantom
from tools.fhir.builders import DICOM_UID_SYSTEM
from tools.imaging.orientation import reorient
from tools.imaging.volume_store import load_volume
from tools.results.contours import contours_to_mask
from tools.review.edits import DISPLAY_VIEW, BrushStroke, EditError, EraseRange, apply_edits
from tools.segmentation.qa import voxel_volume_ml
from tools.segmentation.result_store import load_result
from tools.training.gather import gather_cases
from tools.workflow.approval import ApprovalDecision, ApprovalRequest

pytestmark = pytest.mark.integration

EDITOR = principal("dr-editor", "Dr. Editor")


@pytest.fixture(scope="module")
def seeded(live_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededStudy]:
    study = seed_phantom(live_settings, tmp_path_factory.mktemp("edits") / "ct", phantom_spec(31, "EDIT-0031"))
    yield study
    retire(live_settings, [study])


@pytest.fixture(scope="module")
def runtime(live_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentRuntime]:
    with AgentRuntime(live_settings.model_copy(update={"run_dir": tmp_path_factory.mktemp("run")})) as rt:
        yield rt


def _three_planes_of_the_left_lung(request: ApprovalRequest) -> EraseRange:
    """Three axial planes (display view) in the middle of the left lung's extent."""
    assert request.review_files is not None
    volume = load_volume(Path(request.review_files.volume_path), request.review_files.volume_sha256)
    result = load_result(Path(request.review_files.masks_path), request.review_files.masks_sha256)
    left = next(s.mask for s in result.structures if s.structure.key == "left-lung")
    planes = np.flatnonzero(reorient(volume.geometry, DISPLAY_VIEW).forward(left).any(axis=(1, 2)))
    middle = int(planes[len(planes) // 2])
    return EraseRange(structure="left-lung", plane="axial", first=middle - 1, last=middle + 1)


def test_an_edited_result_is_approved_and_written_as_edited(
    live_settings: Settings, runtime: AgentRuntime, seeded: SeededStudy, tmp_path: Path
) -> None:
    report = runtime.start_study(seeded.imaging_study_id)
    [pending] = report.pending
    ai = pending.request
    assert ai.review_files is not None and ai.edit is None
    volume = load_volume(Path(ai.review_files.volume_path), ai.review_files.volume_sha256)
    ai_result = load_result(Path(ai.review_files.masks_path), ai.review_files.masks_sha256)
    ai_masks = {s.structure.key: s.mask for s in ai_result.structures}

    # An edit that does not fit the series is refused before anything is recorded or run.
    outside = BrushStroke(structure="left-lung", mode="erase", plane="axial", index=10_000, points=[(1, 1)], radius_mm=5)
    with pytest.raises(EditError, match=f"{ai.series.series_instance_uid}.*outside the series"):
        runtime.decide(report.thread_id, {pending.interrupt_id: ApprovalDecision.by(EDITOR, "modify", edits=[outside])})

    erase = _three_planes_of_the_left_lung(ai)
    pacs_before = pacs_listing(live_settings)
    modified = runtime.decide(
        report.thread_id, {pending.interrupt_id: ApprovalDecision.by(EDITOR, "modify", edits=[erase])}
    )
    # Nothing is written: the corrected result comes back for approval, as new objects.
    assert pacs_listing(live_settings) == pacs_before
    [again] = modified.pending
    corrected = again.request
    assert corrected.edit is not None and corrected.edit.editor_id == "dr-editor"
    assert corrected.edit.derived_from_result_uid == ai.request_id != corrected.request_id
    ai_objects = {w.kind: w for w in ai.dicom_writes}
    for write in corrected.dicom_writes:
        assert write.sop_instance_uid != ai_objects[write.kind].sop_instance_uid
        assert write.sha256 != ai_objects[write.kind].sha256
    # The AI's own masks stay in the work store, as they were (what training learns the correction from).
    assert load_result(Path(ai.review_files.masks_path), ai.review_files.masks_sha256).structures[0].mask.any()

    expected = apply_edits(ai_masks, volume.geometry, [erase], ai.series.series_instance_uid)
    erased_voxels = int(ai_masks["left-lung"].sum() - expected["left-lung"].sum())
    assert erased_voxels > 0
    approved = signed_decision("approve", reviewer_id="dr-approver", reviewer_name="Dr. Approver")
    final = runtime.decide(report.thread_id, {again.interrupt_id: approved})
    assert final.done and final.outcomes[0]["outcome"] == "completed"

    # The PACS holds the corrected objects only, and the RTSTRUCT draws exactly the corrected masks.
    written = result_instances(live_settings, seeded.study_instance_uid)
    corrected_uids = {w.kind: w.sop_instance_uid for w in corrected.dicom_writes}
    assert {k: v for k, v in written.items()} == {k: [corrected_uids[k]] for k in ("RTSTRUCT", "SEG", "SR")}
    rtstruct_write = next(w for w in corrected.dicom_writes if w.kind == "RTSTRUCT")
    with pacs_client(live_settings) as pacs:
        rtstruct = pacs.retrieve_instance(
            seeded.study_instance_uid, rtstruct_write.series_instance_uid, rtstruct_write.sop_instance_uid
        )
        [assessment_uid] = assessment_instances(live_settings, seeded.study_instance_uid)
        [assessment_series] = [
            s for s in pacs.search_series(seeded.study_instance_uid) if s.series_number == 9903
        ]
        assessment = pacs.retrieve_instance(
            seeded.study_instance_uid, assessment_series.series_instance_uid, assessment_uid
        )
    names = {roi.ROINumber: roi.ROIName for roi in rtstruct.StructureSetROISequence}
    for roi in rtstruct.StructureSetROISequence:
        assert roi.ROIGenerationAlgorithm == "SEMIAUTOMATIC"
    for contour in rtstruct.ROIContourSequence:
        key = "left-lung" if names[contour.ReferencedROINumber] == "Lung_L" else "right-lung"
        points = [np.asarray(c.ContourData, dtype=float).reshape(-1, 3) for c in contour.ContourSequence]
        assert np.array_equal(contours_to_mask(points, volume.geometry), expected[key]), key

    # The assessment is of the AI's objects, modified into the stored ones.
    codes = [
        item.ConceptCodeSequence[0].CodeValue
        for group in assessment.ContentSequence
        if "ContentSequence" in group
        for item in group.ContentSequence
        if item.ValueType == "CODE"
    ]
    assert codes and set(codes) == {"MODIFIED"}
    referenced = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for group in assessment.ContentSequence
        if "ContentSequence" in group
        for item in group.ContentSequence
        if item.ValueType == "COMPOSITE"
    }
    assert referenced == {w.sop_instance_uid for w in ai.dicom_writes} | set(corrected_uids.values())

    with fhir_client(live_settings) as fhir:
        [observation] = fhir.search("Observation", {"identifier": f"{DICOM_UID_SYSTEM}|urn:oid:{assessment_uid}"})
        assert observation.valueCodeableConcept.coding[0].code == "modified"
        reports = fhir.search("DiagnosticReport", {"subject": seeded.patient_reference})
        [diagnostic] = [r for r in reports if any(i.value == f"urn:oid:{corrected.request_id}" for i in r.identifier)]
        volumes = {
            o.bodySite.coding[0].code: float(o.valueQuantity.value)
            for o in (fhir.read("Observation", r.reference.split("/")[1]) for r in diagnostic.result)
        }
        [provenance] = fhir.search("Provenance", {"target": f"DiagnosticReport/{diagnostic.id}"})
    ai_volumes = {s.key: s.volume_ml for s in ai.structures}
    erased_ml = erased_voxels * voxel_volume_ml(volume.geometry)
    assert volumes["44029006"] == pytest.approx(ai_volumes["left-lung"] - erased_ml, abs=0.2)  # left lung
    assert volumes["3341006"] == pytest.approx(ai_volumes["right-lung"], abs=0.2)
    authors = [a for a in provenance.agent if a.type.coding[0].code == "author"]
    assert [a.who.identifier.value for a in authors] == ["dr-editor"]
    derivations = [e.what.identifier.value for e in provenance.entity if e.role == "derivation"]
    assert f"urn:oid:{ai.request_id}" in derivations

    # Training learns from the correction: the only label objects of the study are the corrected ones.
    with pacs_client(live_settings) as pacs, fhir_client(live_settings) as fhir:
        gathered = gather_cases(pacs, fhir, tmp_path / "cases", study_uids=[seeded.study_instance_uid])
    [pair] = gathered.pairs
    assert pair.label_sop_instance_uid in {corrected_uids["SEG"], corrected_uids["RTSTRUCT"]}
    assert pair.origin == "human-made"  # SEMIAUTOMATIC: a person edited the lungs
