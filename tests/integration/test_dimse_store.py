"""Approved results over DIMSE (IMAGING_AGENT_PACS_STORE=dimse), for a PACS without STOW-RS.

A private Orthanc with its DICOM port open (the `dicom_settings` fixture) is the PACS; the session's
FHIR server is the EHR. The objects are C-STOREd, found again by image-level C-FIND and read back
by C-GET; a forged object under a derived UID (stored before the approval) fails the study.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pydicom
import pytest

from agent.parts import dimse_client
from agent.runtime import AgentRuntime
from agent.settings import Settings
from tests.integration.workflow_helpers import approve, assert_written_once, phantom_spec, retire, seed_phantom
from tools.workflow.result_stores import dataset_sha256

pytestmark = pytest.mark.integration

_seeds = itertools.count(4801)


def _dimse_settings(dicom_settings: Settings, live_settings: Settings, run_dir: Path) -> Settings:
    return dicom_settings.model_copy(update={"fhir_url": live_settings.fhir_url, "run_dir": run_dir, "pacs_store": "dimse"})


def test_approved_results_are_c_stored_found_and_read_back(
    dicom_settings: Settings, live_settings: Settings, tmp_path: Path
) -> None:
    settings = _dimse_settings(dicom_settings, live_settings, tmp_path / "run")
    study = seed_phantom(settings, tmp_path / "phantom", phantom_spec(next(_seeds), "DIMSE-STORE"))
    try:
        with AgentRuntime(settings) as runtime:
            report = runtime.start_study(study.imaging_study_id)
            [pending] = report.pending
            final = runtime.decide(report.thread_id, {pending.interrupt_id: approve()})
        assert [o["outcome"] for o in final.outcomes] == ["completed"], final.outcomes
        assert_written_once(settings, study)
        for write in pending.request.dicom_writes:
            assert write.sop_instance_uid in dimse_client(settings).find_instances(study.study_instance_uid, write.series_instance_uid)
    finally:
        retire(settings, [study])


def test_a_forged_object_under_a_derived_uid_is_caught_over_dimse_too(
    dicom_settings: Settings, live_settings: Settings, tmp_path: Path
) -> None:
    settings = _dimse_settings(dicom_settings, live_settings, tmp_path / "run")
    study = seed_phantom(settings, tmp_path / "phantom", phantom_spec(next(_seeds), "DIMSE-FORGED"))
    try:
        with AgentRuntime(settings) as runtime:
            report = runtime.start_study(study.imaging_study_id)
            [pending] = report.pending
            rtstruct = next(w for w in pending.request.dicom_writes if w.kind == "RTSTRUCT")
            forged = pydicom.dcmread(rtstruct.path)
            forged.StructureSetROISequence[0].ROIName = "FORGED"
            buffer = io.BytesIO()
            forged.save_as(buffer, enforce_file_format=True)
            assert dimse_client(settings).store_part10([buffer.getvalue()]).ok
            final = runtime.decide(report.thread_id, {pending.interrupt_id: approve()})
        [outcome] = final.outcomes
        assert outcome["outcome"] == "failed", outcome
        detail = str(outcome["detail"])
        approved = dataset_sha256(pydicom.dcmread(rtstruct.path))
        assert approved in detail and dataset_sha256(forged) in detail, detail
        assert "AuditEvent/" in detail
    finally:
        retire(settings, [study])
