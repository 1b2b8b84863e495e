"""`imaging-agent listen` at work: a series pushed with dcmtk's storescu becomes a job waiting for approval.

The node runs as its own process against the session's Orthanc and FHIR server. The LIDC chest CT
is pushed under new UIDs and a patient id of this test's own, so no other test's studies mix in.
The first push is cut off by killing the node: nothing of it is processed, and the re-push after
a restart completes the series; then a radiologist approves at the terminal and the results join
the original study in the PACS.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from agent.parts import fhir_client
from agent.runtime import AgentRuntime
from agent.settings import Settings
from tests.conftest import free_port, pacs_env
from tests.integration.workflow_helpers import SeededStudy, assert_written_once, retire
from tools.fhir.builders import uid_search_token

pytestmark = [pytest.mark.integration, pytest.mark.realdata]

CLI = Path(sys.executable).parent / "imaging-agent"
LIDC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lidc-idri-0001" / "dicom"
REVIEWER = pwd.getpwuid(os.getuid()).pw_name
SENDER = "STORESCU"
NODE = "IMAGING_AGENT"
PATIENT_ID = "INTAKE-LIDC-1"


@pytest.fixture(scope="module")
def lidc_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """LIDC-IDRI-0001 under fresh UIDs and this test's patient id; returns the folder and the Study UID."""
    if not LIDC.is_dir():
        pytest.fail(f"{LIDC} is missing: the realdata tier needs ../shared/data")
    folder = tmp_path_factory.mktemp("lidc-intake")
    study_uid, series_uid = generate_uid(), generate_uid()
    for index, path in enumerate(sorted(LIDC.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study_uid, series_uid, PATIENT_ID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"{index:04d}.dcm", enforce_file_format=True)
    return folder, str(study_uid)


def _env(settings: Settings, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGING_AGENT_")}
    env.update(
        IMAGING_AGENT_RUN_DIR=str(settings.run_dir),
        **pacs_env(settings),
        IMAGING_AGENT_FHIR_URL=settings.fhir_url,
        IMAGING_AGENT_LOCAL_RADIOLOGISTS=json.dumps([REVIEWER]),
        IMAGING_AGENT_INTAKE_PORT=str(port),
        IMAGING_AGENT_INTAKE_PEERS=json.dumps([{"ae_title": SENDER, "host": "127.0.0.1"}]),
        IMAGING_AGENT_INTAKE_STABLE_AGE_S="2",
        COLUMNS="200",
    )
    return env


def _start_node(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [str(CLI), "listen"], env=_env(settings, port), cwd=settings.run_dir,
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    _wait_for_echo(process, port, log)
    return process


def _wait_for_echo(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until the node in `process` answers C-ECHO from the configured sender (60 s at most)."""
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(Verification)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        assoc = ae.associate("127.0.0.1", port, ae_title=NODE)
        if assoc.is_established:
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()
            return
        time.sleep(0.5)
    raise AssertionError(f"the DICOM node did not answer C-ECHO in 60 s:\n{log.read_text()}")


def _push(port: int, files: list[Path]) -> subprocess.Popen[str]:
    storescu = shutil.which("storescu")
    assert storescu, "dcmtk's storescu is missing: run scripts/bootstrap.sh (Debian package dcmtk)"
    return subprocess.Popen(
        [storescu, "-aet", SENDER, "-aec", NODE, "127.0.0.1", str(port), *map(str, files)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _pending_for(settings: Settings, study_uid: str) -> list[str]:
    with AgentRuntime(settings) as runtime:
        return [p.interrupt_id for p in runtime.pending_approvals() if p.request.study_instance_uid == study_uid]


def test_a_pushed_series_becomes_a_job_and_an_approval_writes_into_the_original_study(
    settings: Settings, live_settings: Settings, lidc_copy: tuple[Path, str], tmp_path: Path
) -> None:
    folder, study_uid = lidc_copy
    files = sorted(folder.glob("*.dcm"))
    port = free_port()
    log = tmp_path / "listen.log"
    inbox = settings.run_dir / "intake" / study_uid

    # 1. The node is killed in the middle of a push: the sender sees it, nothing is processed.
    node = _start_node(settings, port, log)
    push = _push(port, files)
    deadline = time.monotonic() + 60
    while len(list(inbox.rglob("*.dcm"))) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    node.send_signal(signal.SIGKILL)
    node.wait(timeout=30)
    out, _ = push.communicate(timeout=60)
    assert push.returncode != 0 or "error" in out.lower(), out
    partial = len(list(inbox.rglob("*.dcm")))
    assert 20 <= partial < len(files)

    node = _start_node(settings, port, log)
    try:
        time.sleep(4)  # twice the stable age: a whole series would have been taken by now
        with fhir_client(settings) as fhir:
            assert fhir.search("ImagingStudy", {"identifier": uid_search_token(study_uid)}) == []
        assert _pending_for(settings, study_uid) == []

        # 2. The re-push completes the series: registered in FHIR, a job waiting for approval.
        again = _push(port, files)
        out, _ = again.communicate(timeout=300)
        assert again.returncode == 0, out
        deadline = time.monotonic() + 300
        while not (pending := _pending_for(settings, study_uid)) and time.monotonic() < deadline:
            assert node.poll() is None, log.read_text()
            time.sleep(1)
        assert len(pending) == 1, log.read_text()
    finally:
        node.terminate()
        node.wait(timeout=60)

    with fhir_client(settings) as fhir:
        [record] = fhir.search("ImagingStudy", {"identifier": uid_search_token(study_uid)})
        [patient] = fhir.search("Patient", {"identifier": f"{settings.patient_identifier_system}|{PATIENT_ID}"})
    assert record.status == "registered" and record.subject.reference == f"Patient/{patient.id}"
    assert record.numberOfInstances == len(files)
    seeded = SeededStudy(imaging_study_id=str(record.id), study_instance_uid=study_uid, patient_reference=f"Patient/{patient.id}")
    try:
        # 3. A radiologist approves at a terminal: the results join the original study.
        env = _env(settings, port)
        approved = subprocess.run(
            [str(CLI), "approvals", "approve", pending[0]], env=env, cwd=settings.run_dir,
            capture_output=True, text=True, timeout=300,
        )
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert_written_once(live_settings, seeded)
    finally:
        retire(live_settings, [seeded])


def test_the_api_service_runs_the_node_when_asked(settings: Settings, tmp_path: Path) -> None:
    port, api_port = free_port(), free_port()
    env = _env(settings, port) | {"IMAGING_AGENT_INTAKE_WITH_SERVICE": "true"}
    log = tmp_path / "serve.log"
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    service = subprocess.Popen(
        [str(CLI), "serve", "--port", str(api_port)], env=env, cwd=settings.run_dir, stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_echo(service, port, log)
        ae = AE(ae_title=SENDER)
        ae.add_requested_context(Verification)
        assert ae.associate("127.0.0.1", port, ae_title="SOMEONE_ELSE").is_rejected
    finally:
        service.terminate()
        service.wait(timeout=60)
