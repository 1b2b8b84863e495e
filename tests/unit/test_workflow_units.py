"""The workflow's pure parts: series choice, preflight, work-file stores, report text, the FHIR
write-back builders and the approval contract."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.imagingstudy import ImagingStudy, ImagingStudySeries
from fhir.resources.R4B.reference import Reference
from pydantic import ValidationError

from tests.identities import TEST_ISSUER, signed_decision
from tools.dicomweb.models import SeriesSummary
from tools.fhir.builders import DICOM_CODE_SYSTEM, DICOM_UID_SYSTEM
from tools.imaging.geometry import Geometry
from tools.imaging.npz_store import file_sha256, save_npz
from tools.imaging.preflight import PreflightError, PreflightLimits, preflight
from tools.imaging.series_choice import NoSuitableSeriesError, choose_ct_series
from tools.imaging.volume import Volume
from tools.imaging.volume_store import content_key, load_volume, save_volume
from tools.results.common import DerivedObject
from tools.results.fhir_report import (
    OBSERVATION_ID_SYSTEM,
    UCUM,
    Reviewer,
    StructureVolume,
    WritebackPlan,
    build_diagnostic_report,
    build_observation,
    build_provenance,
    build_writeback_transaction,
    describe_changes,
    updated_imaging_study,
)
from tools.results.report import ReportInput, ReportStructure, conclusion, flags_of, render_report
from tools.segmentation.base import STRUCTURES, QAFlag, SegmentationResult, StructureMask
from tools.segmentation.result_store import load_result, save_result
from tools.workflow.approval import (
    ApprovalDecision,
    ApprovalRequest,
    PendingDicomWrite,
    SeriesChoice,
    StructureForReview,
)

pytestmark = pytest.mark.unit

STUDY_UID = "1.2.3.4"
WHEN = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


# -- series choice --------------------------------------------------------------------------


def _series(uid: str, modality: str = "CT", images: int = 100, thickness: float | None = 2.5, part: str | None = None) -> SeriesSummary:
    return SeriesSummary(
        series_instance_uid=uid,
        modality=modality,
        number_of_instances=images,
        slice_thickness_mm=thickness,
        body_part_examined=part,
        series_description=f"series {uid}",
    )


def test_series_choice_prefers_chest_then_thin_slices_then_more_images() -> None:
    chosen = choose_ct_series(
        STUDY_UID,
        [
            _series("1.1", thickness=1.0, part="ABDOMEN"),
            _series("1.2", thickness=2.5, part="CHEST"),
            _series("1.3", thickness=1.25, part="CHEST", images=80),
            _series("1.4", thickness=1.25, part="CHEST", images=300),
        ],
    )
    assert chosen.series_instance_uid == "1.4"
    assert chosen.images == 300 and chosen.slice_thickness_mm == 1.25 and chosen.description == "series 1.4"
    assert "chest body part" in chosen.reason
    assert all(uid in chosen.reason for uid in ("1.1", "1.2", "1.3")), "the reason names the series not chosen"


def test_series_choice_skips_localizers_other_modalities_and_thick_slices() -> None:
    chosen = choose_ct_series(
        STUDY_UID,
        [
            _series("2.1", images=3, thickness=None),
            _series("2.2", modality="SR", images=1),
            _series("2.3", thickness=8.0),
            _series("2.4", thickness=5.0),
        ],
    )
    assert chosen.series_instance_uid == "2.4"
    assert "fewer than 20 images" in chosen.reason and "not CT" in chosen.reason and "thicker than 5 mm" in chosen.reason


def test_series_choice_refuses_with_every_series_and_why() -> None:
    with pytest.raises(NoSuitableSeriesError) as caught:
        choose_ct_series(STUDY_UID, [_series("3.1", modality="MR"), _series("3.2", thickness=7.5)])
    message = str(caught.value)
    assert STUDY_UID in message and "3.1" in message and "not CT" in message
    assert "3.2" in message and "thicker than 5 mm" in message
    with pytest.raises(NoSuitableSeriesError, match="Series found: none"):
        choose_ct_series(STUDY_UID, [])


# -- preflight ------------------------------------------------------------------------------


def _volume(shape: tuple[int, int, int] = (60, 256, 256), spacing: tuple[float, float, float] = (1.0, 1.0, 2.5)) -> Volume:
    geometry = Geometry(origin=(0.0, 0.0, 0.0), spacing=spacing, direction=((1, 0, 0), (0, 1, 0), (0, 0, 1)), shape=shape)
    rng = np.random.default_rng(0)
    return Volume(
        array=rng.integers(-1000, 400, size=shape, dtype=np.int16),
        geometry=geometry,
        series_instance_uid="1.2.3.4.5",
        study_instance_uid=STUDY_UID,
        frame_of_reference_uid="1.2.3.4.6",
        modality="CT",
        sop_instance_uids=[f"1.2.3.4.7.{k}" for k in range(shape[0])],
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    )


def test_preflight_passes_a_thin_slice_chest_ct() -> None:
    preflight(_volume())


@pytest.mark.parametrize(
    ("shape", "spacing", "problem"),
    [
        ((60, 256, 256), (1.0, 1.0, 8.0), "slice spacing 8.00 mm is above 5 mm"),
        ((60, 256, 256), (2.0, 2.0, 2.5), "pixel spacing 2.00 mm is above 1.5 mm"),
        ((30, 256, 256), (1.0, 1.0, 2.5), "covers only 72 mm"),
        ((60, 96, 96), (1.0, 1.0, 2.5), "matrix 96x96 is below 128"),
    ],
)
def test_preflight_refuses_with_the_series_and_the_problem(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], problem: str
) -> None:
    with pytest.raises(PreflightError) as caught:
        preflight(_volume(shape, spacing))
    assert problem in str(caught.value) and "1.2.3.4.5" in str(caught.value)


def test_preflight_lists_every_problem_and_honours_limits() -> None:
    with pytest.raises(PreflightError) as caught:
        preflight(_volume((10, 96, 96), (2.0, 2.0, 8.0)))
    assert str(caught.value).count(";") >= 3
    preflight(_volume((60, 256, 256), (2.0, 2.0, 2.5)), PreflightLimits(max_pixel_spacing_mm=2.0))


# -- work-file stores -----------------------------------------------------------------------


def test_content_key_depends_on_the_exact_instances_not_their_order() -> None:
    key = content_key("1.2", ["1.2.1", "1.2.2"])
    assert key == content_key("1.2", ["1.2.2", "1.2.1"])
    assert key != content_key("1.2", ["1.2.1"]) and key != content_key("1.3", ["1.2.1", "1.2.2"])
    assert len(key) == 24 and all(c in "0123456789abcdef" for c in key)


def test_volume_round_trip_and_a_changed_file_is_refused(tmp_path: Path) -> None:
    volume = _volume((8, 32, 32))
    path = tmp_path / "work" / "volume.npz"
    digest = save_volume(volume, path)
    assert digest == file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in path.parent.iterdir()] == ["volume.npz"], "no partial file left behind"
    loaded = load_volume(path, digest)
    assert np.array_equal(loaded.array, volume.array) and loaded.array.dtype == volume.array.dtype
    assert loaded.geometry == volume.geometry
    assert loaded.sop_instance_uids == volume.sop_instance_uids and loaded.series_instance_uid == volume.series_instance_uid
    assert save_volume(volume, path) == digest, "the same volume gives the same bytes"

    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ValueError, match="changed since it was written") as caught:
        load_volume(path, digest)
    assert str(path) in str(caught.value)


def _result() -> SegmentationResult:
    rng = np.random.default_rng(1)
    flag = QAFlag(code="small", severity="warning", structure="left-lung", message="left lung smaller than usual")
    return SegmentationResult(
        engine="lung-threshold",
        engine_version="1.0",
        structures=[
            StructureMask(structure=STRUCTURES["left-lung"], mask=rng.random((8, 32, 32)) > 0.5, confidence=0.91, flags=[flag]),
            StructureMask(structure=STRUCTURES["right-lung"], mask=rng.random((8, 32, 32)) > 0.7, confidence=0.88),
        ],
        flags=[QAFlag(code="fov", severity="info", structure=None, message="lungs touch the field of view")],
        seconds=1.25,
        parameters={"lung_threshold_hu": "-403", "min_lung_ml": "15"},
    )


def test_segmentation_round_trip_and_a_changed_file_is_refused(tmp_path: Path) -> None:
    result = _result()
    path = tmp_path / "segmentation.npz"
    digest = save_result(result, path)
    loaded = load_result(path, digest)
    assert (loaded.engine, loaded.engine_version, loaded.seconds) == ("lung-threshold", "1.0", 1.25)
    assert [s.structure.key for s in loaded.structures] == ["left-lung", "right-lung"]
    for before, after in zip(result.structures, loaded.structures, strict=True):
        assert after.mask.dtype == bool and np.array_equal(after.mask, before.mask)
        assert after.confidence == before.confidence and after.flags == before.flags
    assert loaded.flags == result.flags
    assert loaded.parameters == result.parameters

    path.write_bytes(b"not a segmentation")
    with pytest.raises(ValueError, match="changed since it was written"):
        load_result(path, digest)


def test_a_segmentation_stored_before_masks_were_packed_still_loads(tmp_path: Path) -> None:
    """A study paused between segment and build across an upgrade finds its boolean masks."""
    result = _result()
    path = tmp_path / "segmentation.npz"
    save_result(result, path)
    with np.load(path) as stored:
        meta = json.loads(str(stored["meta"]))
    del meta["shape"]
    digest = save_npz(path, meta, compressed=True, **{f"mask_{i}": s.mask for i, s in enumerate(result.structures)})
    loaded = load_result(path, digest)
    for before, after in zip(result.structures, loaded.structures, strict=True):
        assert after.mask.dtype == bool and np.array_equal(after.mask, before.mask)


# -- the text report ------------------------------------------------------------------------


def _report_input(flags: list[QAFlag]) -> ReportInput:
    return ReportInput(
        study_instance_uid=STUDY_UID,
        series_instance_uid="1.2.3.4.5",
        series_images=60,
        slice_spacing_mm=5.0,
        engine="lung-threshold",
        engine_version="1.0",
        structures=[
            ReportStructure(display="Left lung", volume_ml=2510.4, mean_hu=-820.0, n_components=1),
            ReportStructure(display="Right lung", volume_ml=2890.6, mean_hu=-815.0, n_components=1),
        ],
        flags=flags,
    )


def test_conclusion_states_volumes_and_qa_findings() -> None:
    assert conclusion(_report_input([])) == (
        "Automatic contours (lung-threshold 1.0): left lung 2510 mL, right lung 2891 mL; no QA findings."
    )
    flags = [
        QAFlag(code="a", severity="warning", structure=None, message="w"),
        QAFlag(code="b", severity="fail", structure=None, message="f"),
        QAFlag(code="c", severity="info", structure=None, message="i"),
    ]
    assert conclusion(_report_input(flags)).endswith("; 2 QA finding(s) to review.")
    assert [f.code for f in flags_of(flags, "warning")] == ["a"]


def test_rendered_report_names_series_structures_and_flags() -> None:
    text = render_report(_report_input([QAFlag(code="a", severity="warning", structure=None, message="airway leak")]))
    assert STUDY_UID in text and "1.2.3.4.5" in text and "60 images, 5.00 mm" in text
    assert "Left lung" in text and "2510.4 mL" in text and "[WARNING] airway leak" in text
    assert text.endswith("\n") and "Conclusion: Automatic contours" in text
    assert "none raised" in render_report(_report_input([]))


# -- FHIR write-back builders -----------------------------------------------------------------


def _objects() -> list[DerivedObject]:
    return [
        DerivedObject(
            kind=kind,
            sop_class_uid=sop_class,
            sop_instance_uid=f"2.25.{n}1",
            series_instance_uid=f"2.25.{n}0",
            study_instance_uid=STUDY_UID,
            sha256=f"{n}" * 64,
            size_bytes=1000 + n,
        )
        for n, (kind, sop_class) in enumerate(
            [
                ("RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.3"),
                ("SEG", "1.2.840.10008.5.1.4.1.1.66.4"),
                ("SR", "1.2.840.10008.5.1.4.1.1.88.34"),
            ],
            start=1,
        )
    ]


def _plan(**update: object) -> WritebackPlan:
    plan = WritebackPlan(
        result_uid="2.25.99",
        imaging_study_id="is-1",
        imaging_study_version="3",
        study_instance_uid=STUDY_UID,
        patient_reference="Patient/p-1",
        engine="lung-threshold",
        engine_version="1.0",
        structures=[
            StructureVolume(key="left-lung", display="Left lung", snomed_code="44029006", volume_ml=2510.44),
            StructureVolume(key="right-lung", display="Right lung", snomed_code="3341006", volume_ml=2890.6),
        ],
        objects=_objects(),
        conclusion="Automatic contours: left lung 2510 mL, right lung 2891 mL; no QA findings.",
        report_text=render_report(_report_input([])),
    )
    return plan.model_copy(update=update)


def _attached_text(report: object) -> str:
    """The presentedForm text as it goes on the wire (base64 in JSON, PS FHIR R4 datatypes)."""
    data = json.loads(report.model_dump_json())["presentedForm"][0]["data"]  # type: ignore[attr-defined]
    return base64.b64decode(data).decode()


def _study() -> ImagingStudy:
    return ImagingStudy(
        id="is-1",
        meta={"versionId": "3"},
        status="registered",
        subject=Reference(reference="Patient/p-1"),
        series=[
            ImagingStudySeries(
                uid="1.2.3.4.5", modality=Coding(system=DICOM_CODE_SYSTEM, code="CT"), numberOfInstances=60
            )
        ],
        numberOfSeries=1,
        numberOfInstances=60,
    )


def test_observation_is_a_coded_volume_derived_from_the_study() -> None:
    plan = _plan()
    obs = build_observation(plan, plan.structures[0], "urn:uuid:device")
    assert obs.status == "final"
    assert obs.identifier[0].system == OBSERVATION_ID_SYSTEM and obs.identifier[0].value == "2.25.99/left-lung/volume"
    quantity = obs.valueQuantity
    assert (float(quantity.value), quantity.unit, quantity.system, quantity.code) == (2510.4, "mL", UCUM, "mL")
    assert obs.bodySite.coding[0].code == "44029006" and obs.bodySite.coding[0].system == "http://snomed.info/sct"
    assert obs.derivedFrom[0].reference == "ImagingStudy/is-1" and obs.subject.reference == "Patient/p-1"
    assert obs.device.reference == "urn:uuid:device"


def test_diagnostic_report_names_the_interpreter_only_when_someone_reviewed() -> None:
    plan = _plan()
    reviewed = build_diagnostic_report(plan, ["urn:uuid:o1", "urn:uuid:o2"], "urn:uuid:rev", "urn:uuid:dev", WHEN)
    assert reviewed.status == "final" and reviewed.resultsInterpreter[0].reference == "urn:uuid:rev"
    assert reviewed.identifier[0].system == DICOM_UID_SYSTEM and reviewed.identifier[0].value == "urn:oid:2.25.99"
    assert reviewed.imagingStudy[0].reference == "ImagingStudy/is-1"
    assert [r.reference for r in reviewed.result] == ["urn:uuid:o1", "urn:uuid:o2"]
    assert reviewed.conclusion == plan.conclusion
    assert _attached_text(reviewed) == plan.report_text
    unreviewed = build_diagnostic_report(plan, ["urn:uuid:o1"], None, "urn:uuid:dev", WHEN)
    assert unreviewed.resultsInterpreter is None


def test_provenance_reviewed_names_a_verifier_and_gives_no_reason() -> None:
    plan = _plan()
    prov = build_provenance(plan, ["urn:uuid:report", "ImagingStudy/is-1"], "urn:uuid:dev", "urn:uuid:rev", WHEN)
    assert [a.type.coding[0].code for a in prov.agent] == ["assembler", "verifier"]
    assert prov.agent[0].who.display == "lung-threshold 1.0" and prov.agent[1].who.reference == "urn:uuid:rev"
    assert not prov.reason
    assert prov.entity[0].role == "source" and prov.entity[0].what.reference == "ImagingStudy/is-1"
    assert [e.what.identifier.value for e in prov.entity[1:]] == [f"urn:oid:{o.sop_instance_uid}" for o in plan.objects]
    assert [t.reference for t in prov.target] == ["urn:uuid:report", "ImagingStudy/is-1"]


def test_provenance_of_an_automatic_approval_says_nobody_reviewed() -> None:
    prov = build_provenance(_plan(), ["urn:uuid:report"], "urn:uuid:dev", "urn:uuid:rev", WHEN, reviewed=False)
    assert [a.type.coding[0].code for a in prov.agent] == ["assembler", "enterer"]
    assert prov.reason and "no human reviewed" in prov.reason[0].text
    assert prov.id == build_provenance(_plan(), [], "d", "r", WHEN).id, "one Provenance per result, reviewed or not"


def test_updated_imaging_study_lists_each_result_series_once() -> None:
    study = _study()
    updated = updated_imaging_study(study, _objects())
    assert study.status == "registered" and len(study.series) == 1, "the input is not changed"
    assert updated.status == "available"
    assert [s.modality.code for s in updated.series] == ["CT", "RTSTRUCT", "SEG", "SR"]
    assert updated.series[1].instance[0].uid == "2.25.11"
    assert updated.series[1].instance[0].sopClass.code == "urn:oid:1.2.840.10008.5.1.4.1.1.481.3"
    assert (updated.numberOfSeries, updated.numberOfInstances) == (4, 63)
    again = updated_imaging_study(updated, _objects())
    assert [s.uid for s in again.series] == [s.uid for s in updated.series], "a second write adds nothing"


def _entries(bundle: object) -> dict[str, list[object]]:
    by_type: dict[str, list[object]] = {}
    for entry in bundle.entry:  # type: ignore[attr-defined]
        by_type.setdefault(entry.resource.get_resource_type(), []).append(entry)
    return by_type


def test_transaction_is_conditional_and_safe_to_send_twice() -> None:
    reviewer = Reviewer(id="dr-lee", name="Dr. Lee", system=TEST_ISSUER)
    bundle = build_writeback_transaction(_plan(), _study(), reviewer, WHEN)
    assert bundle.type == "transaction"
    entries = _entries(bundle)
    assert {k: len(v) for k, v in entries.items()} == {
        "Device": 1,
        "Practitioner": 1,
        "Observation": 2,
        "DiagnosticReport": 1,
        "ImagingStudy": 1,
        "Provenance": 1,
        "AuditEvent": 1,
    }
    for kind in ("Device", "Practitioner", "Observation", "DiagnosticReport"):
        for entry in entries[kind]:
            assert entry.request.method == "POST" and entry.request.ifNoneExist.startswith("identifier=")
    [report] = entries["DiagnosticReport"]
    assert report.request.ifNoneExist == f"identifier={DICOM_UID_SYSTEM}|urn:oid:2.25.99"
    assert report.resource.resultsInterpreter[0].reference == entries["Practitioner"][0].fullUrl
    [study] = entries["ImagingStudy"]
    assert (study.request.method, study.request.url, study.request.ifMatch) == ("PUT", "ImagingStudy/is-1", 'W/"3"')
    for kind in ("Provenance", "AuditEvent"):
        [entry] = entries[kind]
        assert entry.request.method == "PUT" and entry.request.url == f"{kind}/{entry.resource.id}"
    [prov] = entries["Provenance"]
    assert prov.resource.agent[1].type.coding[0].code == "verifier"
    targets = {t.reference for t in prov.resource.target}
    assert report.fullUrl in targets and "ImagingStudy/is-1" in targets
    assert {e.fullUrl for e in entries["Observation"]} <= targets

    # Built again (a resume), it is the same transaction: same fullUrls, same ids, same conditions.
    again = build_writeback_transaction(_plan(), _study(), reviewer, WHEN)
    assert [(e.fullUrl, e.request.url, e.request.ifNoneExist) for e in again.entry] == [
        (e.fullUrl, e.request.url, e.request.ifNoneExist) for e in bundle.entry
    ]


def test_transaction_of_an_automatic_approval_names_no_interpreter() -> None:
    bundle = build_writeback_transaction(_plan(), _study(), Reviewer(id="ops", name="Night batch", system=TEST_ISSUER, reviewed=False), WHEN)
    entries = _entries(bundle)
    [report] = entries["DiagnosticReport"]
    [prov] = entries["Provenance"]
    assert report.resource.resultsInterpreter is None
    assert prov.resource.agent[1].type.coding[0].code == "enterer"
    assert "no human reviewed" in prov.resource.reason[0].text


def test_report_text_of_an_automatic_approval_does_not_claim_a_radiologist_review() -> None:
    """The presentedForm is what a clinician reads: after `--yes` it must not say someone reviewed it."""
    bundle = build_writeback_transaction(_plan(), _study(), Reviewer(id="ops", name="Night batch", system=TEST_ISSUER, reviewed=False), WHEN)
    [report] = _entries(bundle)["DiagnosticReport"]
    text = _attached_text(report.resource)
    assert "reviewed by a radiologist" not in text, text


def test_transaction_without_a_known_version_sends_no_if_match() -> None:
    bundle = build_writeback_transaction(_plan(imaging_study_version=None), _study(), Reviewer(id="a", name="A", system=TEST_ISSUER), WHEN)
    [study] = _entries(bundle)["ImagingStudy"]
    assert study.request.ifMatch is None


def test_described_changes_list_every_resource_the_transaction_writes() -> None:
    changes = describe_changes(_plan())
    kinds = [c.resource_type for c in changes]
    assert set(kinds) == set(_entries(build_writeback_transaction(_plan(), _study(), Reviewer(id="a", name="A", system=TEST_ISSUER), WHEN)))
    assert kinds.count("Observation") == 2
    [study] = [c for c in changes if c.resource_type == "ImagingStudy"]
    assert "registered -> available" in study.summary and "3 result series" in study.summary and "version 3" in study.summary
    assert any("2510.4 mL" in c.summary for c in changes)


# -- the approval contract ----------------------------------------------------------------------


def test_a_rejection_needs_a_reason() -> None:
    for reason in (None, "", "   "):
        with pytest.raises(ValidationError, match="rejection needs a reason"):
            signed_decision(action="reject", reviewer_id="dr-lee", reviewer_name="Dr. Lee", reason=reason)
    decision = signed_decision(action="reject", reviewer_id="dr-lee", reviewer_name="Dr. Lee", reason="wrong side")
    assert decision.reason == "wrong side"


def test_a_decision_names_who_and_when() -> None:
    with pytest.raises(ValidationError):
        signed_decision(action="approve", reviewer_id="", reviewer_name="Dr. Lee")
    with pytest.raises(ValidationError):
        signed_decision(action="approve", reviewer_id="dr-lee", reviewer_name="")
    with pytest.raises(ValidationError):
        ApprovalDecision.model_validate({"action": "maybe", "reviewer_id": "dr-lee", "reviewer_name": "Dr. Lee"})
    decision = signed_decision(action="approve", reviewer_id="dr-lee", reviewer_name="Dr. Lee")
    assert decision.decided_at.tzinfo is not None and not decision.automatic
    # The resume value travels as JSON through the checkpoint and comes back the same.
    assert ApprovalDecision.model_validate(decision.model_dump(mode="json")) == decision


def test_a_blank_reviewer_is_not_an_identity() -> None:
    with pytest.raises(ValidationError):
        signed_decision(action="approve", reviewer_id="   ", reviewer_name="Dr. Lee")


def test_reviewer_of_a_decision_says_whether_a_human_reviewed() -> None:
    human = signed_decision(action="approve", reviewer_id="dr-lee", reviewer_name="Dr. Lee").reviewer()
    auto = signed_decision(action="approve", reviewer_id="ops", reviewer_name="Ops", automatic=True).reviewer()
    assert (human.id, human.name, human.reviewed) == ("dr-lee", "Dr. Lee", True)
    assert auto.reviewed is False


def test_approval_request_round_trips_as_the_interrupt_payload() -> None:
    plan = _plan()
    request = ApprovalRequest(
        request_id=plan.result_uid,
        imaging_study_id="is-1",
        study_instance_uid=STUDY_UID,
        patient_id="P-1",
        patient_display_name="Doe^Jane",
        study_date="2026-03-01",
        study_description="CT CHEST",
        series=SeriesChoice(series_instance_uid="1.2.3.4.5", description="chest", images=60, slice_thickness_mm=5.0, reason="r"),
        engine="lung-threshold",
        engine_version="1.0",
        structures=[StructureForReview(key="left-lung", display="Left lung", volume_ml=2510.4, mean_hu=-820, n_components=1, confidence=0.9)],
        flags=[],
        previews=["/run/work/k/previews/axial.png"],
        report_text=plan.report_text,
        dicom_writes=[
            PendingDicomWrite(
                kind=o.kind,
                sop_class_uid=o.sop_class_uid,
                sop_class_name="x",
                sop_instance_uid=o.sop_instance_uid,
                series_instance_uid=o.series_instance_uid,
                sha256=o.sha256,
                size_bytes=o.size_bytes,
                path=f"/run/work/k/{o.kind}.dcm",
            )
            for o in plan.objects
        ],
        fhir_changes=describe_changes(plan),
    )
    assert ApprovalRequest.model_validate(request.model_dump(mode="json")) == request
    with pytest.raises(ValidationError):
        ApprovalRequest.model_validate({**request.model_dump(mode="json"), "dicom_writes": [{"kind": "SEG"}]})
