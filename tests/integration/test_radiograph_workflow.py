"""A pending chest radiograph (DX) end to end on the real Orthanc and FHIR server, MedImageParse 2D
behind the contract server: segmentation, approval card, approve -> SEG, SR and DiagnosticReport;
reject -> nothing written."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.servicerequest import ServiceRequest
from PIL import Image
from pydicom import dcmread
from pydicom.uid import MRImageStorage

from agent.parts import fhir_client
from agent.runtime import AgentRuntime
from agent.seed import seed_datasets
from agent.settings import Settings
from graphs.planner_tools.catalog import build_tools
from tests.fake_cxrreportgen import FakeCxrReportGen
from tests.fake_medimageinsight import FakeMedImageInsight
from tests.fake_medimageparse import FakeMedImageParse
from tests.identities import signed_decision
from tests.integration.workflow_helpers import (
    SeededStudy,
    assert_nothing_written,
    reports_of,
    result_instances,
)
from tools.fhir.task import task_token
from tools.imaging.volume import read_series_dir
from tools.phantom import PhantomSpec, Tissue, make_phantom, write_phantom
from tools.phantom.radiograph import make_radiograph, mislabelled_radiograph
from tools.workflow.segment import NoEngineResultError

pytestmark = pytest.mark.integration

PATIENT_NAME = "Xray^Winifred"


def _seed_radiograph(settings: Settings, folder: Path, seed: int, patient_id: str) -> tuple[SeededStudy, str]:
    spec = PhantomSpec(
        slices=60, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0, seed=seed,
        patient_id=patient_id, patient_name=PATIENT_NAME,
    )
    radiograph = make_radiograph(make_phantom(spec))
    folder.mkdir(parents=True)
    radiograph.dataset.save_as(folder / "dx.dcm", enforce_file_format=True)
    [seeded] = seed_datasets(settings, read_series_dir(folder))
    study = SeededStudy(
        imaging_study_id=seeded.imaging_study_id,
        study_instance_uid=seeded.study_instance_uid,
        patient_reference=f"Patient/{seeded.patient_resource_id}",
    )
    return study, patient_id


@pytest.fixture(scope="module")
def scoring() -> Iterator[FakeMedImageParse]:
    with FakeMedImageParse() as fake:
        yield fake


@pytest.fixture()
def runtime(settings: Settings, scoring: FakeMedImageParse) -> Iterator[AgentRuntime]:
    with AgentRuntime(settings.model_copy(update={"medimageparse_url": scoring.url})) as rt:
        yield rt


def _decide(action: str, **extra: str) -> object:
    return signed_decision(action=action, reviewer_id="dr-chest", reviewer_name="Dr. Chest", **extra)


def test_radiograph_approved_is_written_as_seg_sr_and_report(
    live_settings: Settings, runtime: AgentRuntime, scoring: FakeMedImageParse, seeded: list[SeededStudy],
    tmp_path: Path,
) -> None:
    study, patient_id = _seed_radiograph(live_settings, tmp_path / "dx", 21, "DX-0021")
    seeded.append(study)
    sent_before = len(scoring.requests)

    report = runtime.start_study(study.imaging_study_id, engine="medimageparse")
    [pending] = report.pending
    request = pending.request
    assert request.series.modality == "DX" and request.engine == "medimageparse"
    assert request.engine_endpoint == urlsplit(scoring.url).netloc  # which deployment segmented it
    assert [w.kind for w in request.dicom_writes] == ["SEG", "SR"]
    assert [s.key for s in request.structures] == ["left-lung", "right-lung", "heart"]
    assert all(s.area_mm2 and s.area_mm2 > 5000 for s in request.structures)
    assert [Path(p).name for p in request.previews] == ["radiograph.png"]
    assert "cardiothoracic ratio" in request.report_text
    assert {c.resource_type for c in request.fhir_changes} >= {"DiagnosticReport", "Observation", "Device"}
    assert_nothing_written(live_settings, study)  # the card alone writes nothing

    # One request for the study; it held one PNG and the prompts, nothing of the DICOM header.
    bodies = [r.body for r in scoring.requests[sent_before:]]
    assert len(bodies) == 1
    [[image, prompt]] = json.loads(bodies[0])["input_data"]["data"]
    assert prompt == "left lung & right lung & heart"
    assert Image.open(io.BytesIO(base64.b64decode(image))).size == (1024, 1024)
    for text in (PATIENT_NAME, "Winifred", patient_id, study.study_instance_uid, "synthetic"):
        assert text.encode() not in bodies[0]

    final = runtime.decide(report.thread_id, {pending.interrupt_id: _decide("approve")})
    assert final.outcomes[0]["outcome"] == "completed", final.outcomes
    written = result_instances(live_settings, study.study_instance_uid)
    assert sorted(written) == ["SEG", "SR"] and all(len(uids) == 1 for uids in written.values())
    assert written["SEG"] == [w.sop_instance_uid for w in request.dicom_writes if w.kind == "SEG"]
    with fhir_client(live_settings) as fhir:
        [diagnostic] = reports_of(fhir, study)
        assert diagnostic.status == "final" and "radiograph" in diagnostic.code.text
        observations = [fhir.read("Observation", r.reference.split("/")[1]) for r in diagnostic.result]
        assert sorted(o.bodySite.coding[0].code for o in observations) == ["3341006", "44029006", "80891009"]
        assert all(o.valueQuantity.code == "mm2" and o.code.coding[0].code == "42798000" for o in observations)
        areas = {o.bodySite.coding[0].code: o.valueQuantity.value for o in observations}
        assert areas["80891009"] == pytest.approx(next(s.area_mm2 for s in request.structures if s.key == "heart"), abs=0.1)
        device = fhir.read("Device", diagnostic.performer[0].reference.split("/")[1])
        assert "medimageparse" in json.dumps(device.model_dump(mode="json"))
        [provenance] = [
            p for p in fhir.search("Provenance", {})
            if any(t.reference == f"DiagnosticReport/{diagnostic.id}" for t in p.target)
        ]
        assert any(a.who.display == f"{request.engine} {request.engine_version} at {request.engine_endpoint}"
                   for a in provenance.agent)
        [task] = fhir.search("Task", {"identifier": task_token(study.study_instance_uid, "medimageparse")})
        assert task.status == "completed"
        assert fhir.read("ImagingStudy", study.imaging_study_id).status == "available"


def test_radiograph_rejected_writes_nothing(
    live_settings: Settings, runtime: AgentRuntime, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study, _ = _seed_radiograph(live_settings, tmp_path / "dx", 22, "DX-0022")
    seeded.append(study)
    report = runtime.start_study(study.imaging_study_id, engine="medimageparse")
    [pending] = report.pending
    final = runtime.decide(
        report.thread_id, {pending.interrupt_id: _decide("reject", reason="heart outline includes the diaphragm")}
    )
    assert final.outcomes[0]["outcome"] == "rejected"
    assert_nothing_written(live_settings, study)
    with fhir_client(live_settings) as fhir:
        [task] = fhir.search("Task", {"identifier": task_token(study.study_instance_uid, "medimageparse")})
    assert task.status == "rejected"


def test_built_in_engine_refuses_a_radiograph_clearly(
    live_settings: Settings, runtime: AgentRuntime, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study, _ = _seed_radiograph(live_settings, tmp_path / "dx", 23, "DX-0023")
    seeded.append(study)
    report = runtime.start_study(study.imaging_study_id, engine="lung-threshold")
    assert not report.pending
    [outcome] = report.outcomes
    assert outcome["outcome"] == "failed"
    assert "lung-threshold does not read DX" in outcome["detail"] and "Use medimageparse" in outcome["detail"]
    assert_nothing_written(live_settings, study)


@pytest.fixture(scope="module")
def drafting() -> Iterator[FakeCxrReportGen]:
    with FakeCxrReportGen() as fake:
        yield fake


def _order(settings: Settings, study: SeededStudy, reason: str) -> None:
    """A ServiceRequest with `reason`, and the ImagingStudy based on it (as an order would have it)."""
    with fhir_client(settings) as fhir:
        order = fhir.create(ServiceRequest(
            status="active", intent="order", subject=Reference(reference=study.patient_reference),
            code=CodeableConcept(text="XR chest PA"), reasonCode=[CodeableConcept(text=reason)],
        ))
        imaging = fhir.read("ImagingStudy", study.imaging_study_id)
        imaging.basedOn = [Reference(reference=f"ServiceRequest/{order.id}")]
        fhir.update(imaging, if_match=imaging.meta.versionId)


def test_radiograph_with_drafted_findings(
    live_settings: Settings, settings: Settings, scoring: FakeMedImageParse, drafting: FakeCxrReportGen,
    seeded: list[SeededStudy], tmp_path: Path,
) -> None:
    """Segmentation and a CXRReportGen draft on one card; the draft's SR and report written only after approval."""
    study, patient_id = _seed_radiograph(live_settings, tmp_path / "dx", 24, "DX-0024")
    seeded.append(study)
    _order(live_settings, study, f"Cough for 3 weeks. Winifred Xray, MRN {patient_id}, phone 5551234567.")
    sent_before = len(drafting.requests)
    configured = settings.model_copy(update={"medimageparse_url": scoring.url, "cxrreportgen_url": drafting.url})
    with AgentRuntime(configured) as runtime:
        report = runtime.start_study(study.imaging_study_id, engine="medimageparse")
        [pending] = report.pending
        request = pending.request
        draft = request.draft
        assert draft is not None and draft.model == "CXRReportGen" and draft.endpoint.startswith("127.0.0.1:")
        assert [f.text for f in draft.findings][:2] == ["The heart size is normal.", "The lungs are clear."]
        heart_box = draft.findings[0].boxes[0]
        assert 80 <= heart_box.row_min <= heart_box.row_max <= 170 and 90 <= heart_box.column_min < heart_box.column_max <= 195
        assert [w.kind for w in request.dicom_writes] == ["SEG", "SR", "SR"]
        assert [Path(p).name for p in request.previews] == ["radiograph.png", "draft-findings.png"]
        assert_nothing_written(live_settings, study)

        # What left the hospital: one request, the image and three short texts without names or numbers.
        [body] = [r.body for r in drafting.requests[sent_before:]]
        [row] = json.loads(body)["input_data"]["data"]
        assert row[2] == "Cough for 3 weeks. [removed] [removed], MRN [removed], phone [removed]."
        assert row[3] == "PA view of the chest." and row[1] == ""
        for text in ("Winifred", "Xray", patient_id, "5551234567", study.study_instance_uid):
            assert text.encode() not in body

        final = runtime.decide(report.thread_id, {pending.interrupt_id: _decide("approve")})
    assert final.outcomes[0]["outcome"] == "completed", final.outcomes
    written = result_instances(live_settings, study.study_instance_uid)
    assert sorted(written) == ["SEG", "SR"] and len(written["SR"]) == 2
    with fhir_client(live_settings) as fhir:
        reports = reports_of(fhir, study)
        drafted = [r for r in reports if r.code.text == "AI-drafted chest radiograph findings"]
        assert len(reports) == 2 and len(drafted) == 1
        assert drafted[0].status == "final" and "approved by Dr. Chest" in drafted[0].conclusion
        assert drafted[0].resultsInterpreter
        device = fhir.read("Device", drafted[0].performer[0].reference.split("/")[1])
        assert "CXRReportGen" in json.dumps(device.model_dump(mode="json"))
        provenance = [
            p for p in fhir.search("Provenance", {})
            if any(t.reference == f"DiagnosticReport/{drafted[0].id}" for t in p.target)
        ]
        assert len(provenance) == 1
        assert any("CXRReportGen" in (a.who.display or "") for a in provenance[0].agent)


def test_radiograph_draft_rejected_writes_nothing(
    live_settings: Settings, settings: Settings, scoring: FakeMedImageParse, drafting: FakeCxrReportGen,
    seeded: list[SeededStudy], tmp_path: Path,
) -> None:
    study, _ = _seed_radiograph(live_settings, tmp_path / "dx", 25, "DX-0025")
    seeded.append(study)
    configured = settings.model_copy(update={"medimageparse_url": scoring.url, "cxrreportgen_url": drafting.url})
    drafting.failures.append((429, "0"))  # a busy endpoint is waited for, as MedImageParse's is
    with AgentRuntime(configured) as runtime:
        report = runtime.start_study(study.imaging_study_id, engine="medimageparse")
        [pending] = report.pending
        assert pending.request.draft is not None
        final = runtime.decide(report.thread_id, {pending.interrupt_id: _decide("reject", reason="draft misses the effusion")})
    assert final.outcomes[0]["outcome"] == "rejected"
    assert_nothing_written(live_settings, study)
    assert drafting.problems == []


def _seed_mislabelled(settings: Settings, folder: Path, seed: int, patient_id: str) -> SeededStudy:
    """A DX study whose image is a CT slice (a wrong series, a wrong Modality)."""
    spec = PhantomSpec(
        slices=60, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0, seed=seed,
        patient_id=patient_id, patient_name=PATIENT_NAME,
    )
    folder.mkdir(parents=True)
    mislabelled_radiograph(make_phantom(spec)).save_as(folder / "dx.dcm", enforce_file_format=True)
    [seeded] = seed_datasets(settings, read_series_dir(folder))
    return SeededStudy(
        imaging_study_id=seeded.imaging_study_id,
        study_instance_uid=seeded.study_instance_uid,
        patient_reference=f"Patient/{seeded.patient_resource_id}",
    )


@pytest.fixture(scope="module")
def insight() -> Iterator[FakeMedImageInsight]:
    with FakeMedImageInsight() as fake:
        yield fake


def test_input_check_flags_or_refuses_what_the_goal_does_not_expect(
    live_settings: Settings, settings: Settings, scoring: FakeMedImageParse, insight: FakeMedImageInsight,
    seeded: list[SeededStudy], tmp_path: Path,
) -> None:
    expected, _ = _seed_radiograph(live_settings, tmp_path / "ok", 26, "DX-0026")
    flagged = _seed_mislabelled(live_settings, tmp_path / "flag", 27, "DX-0027")
    refused = _seed_mislabelled(live_settings, tmp_path / "refuse", 28, "DX-0028")
    seeded.extend([expected, flagged, refused])
    base = settings.model_copy(update={"medimageparse_url": scoring.url, "medimageinsight_url": insight.url})
    with AgentRuntime(base) as runtime:
        report = runtime.start_study(expected.imaging_study_id, engine="medimageparse")
        check = report.pending[0].request.input_check
        assert check is not None and check.matches and check.best == "x-ray chest posteroanterior"
        assert "input-mismatch" not in [f.code for f in report.pending[0].request.flags]

        report = runtime.start_study(flagged.imaging_study_id, engine="medimageparse")
        request = report.pending[0].request
        assert request.input_check is not None and request.input_check.best == "computed tomography chest axial"
        assert "input-mismatch" in [f.code for f in request.flags]
        assert "computed tomography chest axial" in request.report_text  # the flag is in the report to approve
    with AgentRuntime(base.model_copy(update={"input_check": "refuse", "run_dir": tmp_path / "run-refuse"})) as runtime:
        report = runtime.start_study(refused.imaging_study_id, engine="medimageparse")
    assert not report.pending
    [outcome] = report.outcomes
    assert outcome["outcome"] == "failed" and "IMAGING_AGENT_INPUT_CHECK=refuse" in outcome["detail"]
    assert "series" in outcome["detail"] and "computed tomography chest axial" in outcome["detail"]
    assert_nothing_written(live_settings, refused)
    assert insight.problems == []


def test_the_planners_check_input_tool_reads_the_study(
    live_settings: Settings, settings: Settings, insight: FakeMedImageInsight, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """"check that study <id> is a chest x-ray": the look-only tool answers what MedImageInsight read."""
    study, _ = _seed_radiograph(live_settings, tmp_path / "dx", 29, "DX-0029")
    seeded.append(study)
    with AgentRuntime(settings.model_copy(update={"medimageinsight_url": insight.url})) as runtime:
        [tool] = [t for t in build_tools(runtime) if t.name == "check_input"]
        answer = json.loads(tool.invoke({"imaging_study_id": study.imaging_study_id}))
    assert answer["modality"] == "DX" and answer["matches"] is True
    assert answer["best"] == "x-ray chest posteroanterior" and answer["model"].startswith("MedImageInsight")
    assert_nothing_written(live_settings, study)


# T1-like signal per tissue (arbitrary units): fat bright, liver and muscle middle, air and lung dark.
_MR_SIGNAL = {Tissue.FAT: 2600, Tissue.SOFT_TISSUE: 1100, Tissue.LIVER: 1500, Tissue.HEART: 1200, Tissue.AORTA: 900,
              Tissue.BONE_MEDULLARY: 1900, Tissue.BONE_CORTICAL: 80}


def _seed_mr(settings: Settings, folder: Path, patient_id: str) -> SeededStudy:
    """The phantom as an MR series: its geometry, MR Image Storage, a T1-like signal per tissue."""
    phantom = make_phantom(PhantomSpec(slices=40, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0,
                                       seed=30, patient_id=patient_id, patient_name=PATIENT_NAME, noise_hu=0))
    write_phantom(phantom, folder)
    signal = np.zeros(phantom.labels.shape, dtype=np.uint16)
    for tissue, value in _MR_SIGNAL.items():
        signal[phantom.labels == tissue] = value
    for path in sorted(folder.glob("*.dcm")):
        ds = dcmread(path)
        k = phantom.sop_instance_uids.index(str(ds.SOPInstanceUID))
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.Modality, ds.SeriesDescription = "MR", "Synthetic abdomen T1"
        for name in ("KVP", "ConvolutionKernel", "ReconstructionDiameter", "RescaleIntercept", "RescaleSlope"):
            if name in ds:
                delattr(ds, name)
        ds.PixelData = np.ascontiguousarray(signal[k]).tobytes()
        ds.save_as(path, enforce_file_format=True)
    [seeded] = seed_datasets(settings, read_series_dir(folder))
    return SeededStudy(
        imaging_study_id=seeded.imaging_study_id,
        study_instance_uid=seeded.study_instance_uid,
        patient_reference=f"Patient/{seeded.patient_resource_id}",
    )


def test_an_mr_study_is_segmented_with_its_prompt_and_window_and_refused_by_the_built_in_engine(
    live_settings: Settings, settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """From the PACS: the MR series chosen and assembled, MedImageParse asked for the liver in the MR window
    (a look-only segment, nothing written); lung-threshold refuses MR naming the engine that reads it."""
    study = _seed_mr(live_settings, tmp_path / "mr", "MR-0030")
    seeded.append(study)
    with FakeMedImageParse() as fake, AgentRuntime(settings.model_copy(update={"medimageparse_url": fake.url})) as runtime:
        tools = {t.name: t for t in build_tools(runtime)}
        answer = json.loads(tools["segment"].invoke(
            {"imaging_study_id": study.imaging_study_id, "engine": "medimageparse", "targets": ["liver"]}
        ))
        assert fake.problems == [] and set(fake.prompts) == {"liver"} and len(fake.images) == 40
        with pytest.raises(NoEngineResultError, match="lung-threshold does not read MR.*Use medimageparse"):
            tools["segment"].invoke({"imaging_study_id": study.imaging_study_id, "engine": "lung-threshold"})
    assert answer["engine"] == "medimageparse" and [s["key"] for s in answer["structures"]] == ["liver"]
    assert_nothing_written(live_settings, study)
