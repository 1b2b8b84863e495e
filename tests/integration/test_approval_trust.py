"""Exactly the approved bytes, for the right patient, from well-formed ids (issue 10, items 3, 4, 6).

Each test is an attack tried against the real Orthanc and FHIR server of the session: an object
forged under a derived (predictable) SOP Instance UID through Orthanc's REST API, an ImagingStudy
whose Study Instance UID points at another patient's images, and ids that would become paths or
URLs outside their folder.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from fhir.resources.R4B.identifier import Identifier

from agent.parts import fhir_client
from agent.runtime import AgentRuntime
from agent.settings import Settings
from tests.conftest import with_pacs_url
from tests.integration.workflow_helpers import (
    Fault,
    FaultProxy,
    SeededStudy,
    approve,
    assert_nothing_written,
    phantom_spec,
    reports_of,
    seed_phantom,
    task_of,
)
from tools.fhir.builders import DICOM_UID_SYSTEM
from tools.phantom import make_phantom, write_phantom

pytestmark = pytest.mark.integration

_seeds = itertools.count(5101)


def _new_study(settings: Settings, tmp_path: Path, patient_id: str, studies: list[SeededStudy]) -> SeededStudy:
    seed = next(_seeds)
    study = seed_phantom(settings, tmp_path / f"phantom-{seed}", phantom_spec(seed, patient_id))
    studies.append(study)
    return study


def _orthanc_post_instance(settings: Settings, data: bytes) -> None:
    """Store a file through Orthanc's own REST API (POST /instances), as an attacker on the host could."""
    auth = settings.dicomweb_http_auth()
    basic = auth.basic()
    root = settings.dicomweb_url.rstrip("/").removesuffix("/dicom-web")
    response = httpx.post(
        f"{root}/instances",
        content=data,
        headers={"Content-Type": "application/dicom", **auth.headers()},
        auth=httpx.BasicAuth(*basic) if basic else None,
        timeout=60,
    )
    assert response.status_code == 200, response.text


def _failure(report: Any) -> str:
    [outcome] = report.outcomes
    assert outcome["outcome"] == "failed", outcome
    return str(outcome["detail"])


def test_a_forged_object_under_a_derived_uid_fails_the_study_with_both_hashes(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "TRU-FORGED", seeded)
    with AgentRuntime(settings) as runtime:
        report = runtime.start_study(study.imaging_study_id)
        [pending] = report.pending
        rtstruct = next(w for w in pending.request.dicom_writes if w.kind == "RTSTRUCT")
        # The attacker predicts the UID and stores an RTSTRUCT with a renamed ROI under it first.
        forged_ds = pydicom.dcmread(rtstruct.path)
        forged_ds.StructureSetROISequence[0].ROIName = "FORGED"
        buffer = io.BytesIO()
        forged_ds.save_as(buffer, enforce_file_format=True)
        forged = buffer.getvalue()
        _orthanc_post_instance(live_settings, forged)
        final = runtime.decide(report.thread_id, {pending.interrupt_id: approve()})

    detail = _failure(final)
    forged_sha = hashlib.sha256(forged).hexdigest()
    assert detail.startswith("write_pacs:"), detail
    assert rtstruct.sha256 in detail and forged_sha in detail, detail
    assert rtstruct.sop_instance_uid in detail and "skipped" not in detail
    task = task_of(settings, study)
    assert task.status == "failed" and forged_sha in str(task.statusReason.text)
    audit_ref = next(word for word in detail.split() if word.startswith("AuditEvent/")).rstrip(".,;")
    with fhir_client(settings) as fhir:
        audit = fhir.read("AuditEvent", audit_ref.split("/", 1)[1])
        assert reports_of(fhir, study) == []
        assert fhir.read("ImagingStudy", study.imaging_study_id).status == "registered"
    assert audit.outcome == "8"
    details = {d.type: d.valueString for e in audit.entity for d in e.detail or []}
    assert details == {"approved-sha256": rtstruct.sha256, "pacs-sha256": forged_sha}
    assert any(
        e.what.identifier and e.what.identifier.value == f"urn:oid:{rtstruct.sop_instance_uid}" for e in audit.entity
    )


def test_images_of_another_patient_are_refused_naming_both(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    a = _new_study(live_settings, tmp_path, "TRU-PATIENT-A", seeded)
    b = _new_study(live_settings, tmp_path, "TRU-PATIENT-B", seeded)
    # Patient A's ImagingStudy now points at patient B's images.
    with fhir_client(settings) as fhir:
        record = fhir.read("ImagingStudy", a.imaging_study_id)
        record.identifier = [Identifier(system=DICOM_UID_SYSTEM, value=f"urn:oid:{b.study_instance_uid}")]
        fhir.update(record, if_match=record.meta.versionId)
    with AgentRuntime(settings) as runtime:
        report = runtime.start_study(a.imaging_study_id)
    assert not report.pending, "the wrong patient's images must never reach an approval"
    detail = _failure(report)
    assert detail.startswith("fetch:") and "wrong patient" in detail, detail
    assert f"{a.patient_reference} identifier TRU-PATIENT-A" in detail, detail
    assert "DICOM PatientID TRU-PATIENT-B" in detail, detail
    # The job's Task is keyed by the Study Instance UID the ImagingStudy names now (B's).
    assert task_of(settings, a.model_copy(update={"study_instance_uid": b.study_instance_uid})).status == "failed"
    assert_nothing_written(settings, b)
    with fhir_client(settings) as fhir:
        assert reports_of(fhir, a) == []


def test_the_card_shows_the_dicom_patient_beside_fhirs(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "TRU-CARD", seeded)
    with AgentRuntime(settings) as runtime:
        report = runtime.start_study(study.imaging_study_id)
    request = report.pending[0].request
    assert (request.patient_id, request.dicom_patient_id) == ("TRU-CARD", "TRU-CARD")
    assert request.patient_reference == study.patient_reference
    assert request.imaging_study_version is not None
    assert sorted(request.preview_sha256) == sorted(request.previews)
    for path, digest in request.preview_sha256.items():
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest


def test_a_sop_instance_uid_with_a_slash_is_refused_before_any_file_is_named(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    seed = next(_seeds)
    spec = phantom_spec(seed, "TRU-SLASH")
    study = seed_phantom(live_settings, tmp_path / f"phantom-{seed}", spec)
    seeded.append(study)
    # One more instance in the same series, its SOP Instance UID climbing out of the work folder
    # (run/work/<study>/source/ + ../../../ is the run directory itself, where the check looks).
    [first, *_] = sorted(write_phantom(make_phantom(spec), tmp_path / f"copy-{seed}"))
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = f"../../../escaped-{seed}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    _orthanc_post_instance(live_settings, buffer.getvalue())

    with AgentRuntime(settings) as runtime:
        report = runtime.start_study(study.imaging_study_id)
    detail = _failure(report)
    assert detail.startswith("fetch:") and "not a DICOM UID" in detail, detail
    assert "SOP Instance UID the PACS listed" in detail, detail
    for tree in (tmp_path, settings.run_dir):
        assert not [p for p in tree.rglob(f"escaped-{seed}*")], "a file was written from the UID"
    assert not (settings.run_dir / "work").exists() or not any((settings.run_dir / "work").rglob("*.dcm"))


def test_a_study_uid_identifier_with_dot_dots_is_refused_before_any_url(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    real = _new_study(live_settings, tmp_path, "TRU-DOTDOT", seeded)
    with fhir_client(settings) as fhir:
        record = fhir.read("ImagingStudy", real.imaging_study_id)
        record.id = None
        record.meta = None
        record.identifier = [Identifier(system=DICOM_UID_SYSTEM, value="urn:oid:../../etc")]
        created = fhir.create(record)
    bad = SeededStudy(
        imaging_study_id=str(created.id), study_instance_uid="../../etc", patient_reference=real.patient_reference
    )
    seeded.append(bad)
    with FaultProxy(live_settings.dicomweb_url) as pacs:
        via_proxy = with_pacs_url(settings, f"{pacs.origin}/dicom-web")
        with AgentRuntime(via_proxy) as runtime:
            report = runtime.start_study(bad.imaging_study_id)
    detail = _failure(report)
    assert detail.startswith("start:") and "not a DICOM UID" in detail, detail
    assert f"ImagingStudy/{bad.imaging_study_id}" in detail, detail
    assert pacs.seen == [], f"the PACS was asked: {pacs.seen}"


def test_a_stow_answered_200_that_stored_nothing_fails_the_study(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """A PACS (or a proxy before it) that answers success and keeps nothing: the read-back finds out."""
    study = _new_study(live_settings, tmp_path, "TRU-STOW-200", seeded)
    with FaultProxy(live_settings.dicomweb_url) as pacs:
        via_proxy = with_pacs_url(settings, f"{pacs.origin}/dicom-web")
        with AgentRuntime(via_proxy) as runtime:
            report = runtime.start_study(study.imaging_study_id)
            [pending] = report.pending
            writes = pending.request.dicom_writes
            # Every instance listed as stored (PS3.18 Table 10.5.3-1), none of them sent on.
            referenced = [
                {"00081150": {"vr": "UI", "Value": [w.sop_class_uid]}, "00081155": {"vr": "UI", "Value": [w.sop_instance_uid]}}
                for w in writes
            ]
            lying = Fault(
                match=lambda method, path: method == "POST" and path.rstrip("/").endswith("/studies"),
                status=200,
                body=json.dumps({"00081199": {"vr": "SQ", "Value": referenced}}).encode(),
            )
            pacs.faults.append(lying)
            final = runtime.decide(report.thread_id, {pending.interrupt_id: approve()})
    assert lying.hits >= 1
    detail = _failure(final)
    assert detail.startswith("write_pacs:") and "does not hold it when read back" in detail, detail
    assert any(w.sop_instance_uid in detail for w in writes), detail
    assert_nothing_written(settings, study)
    assert task_of(settings, study).status == "failed"
