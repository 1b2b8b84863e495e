"""The checks behind issue 10's items 3, 4 and 6, without servers: id formats, instance membership,
the patient's identity, a FHIR read that answers with another record, and the card's identity lines."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from pydicom import Dataset
from rich.console import Console

from agent.cli_review import _patient_identities
from agent.ui.markdown import _patient_identities_markdown
from tools.fhir.client import FhirClient
from tools.fhir.errors import FhirError
from tools.http import RetryPolicy
from tools.ids import UnsafeIdentifierError, check_dicom_uid, check_fhir_id
from tools.workflow.failure import StudyFailure
from tools.workflow.identity import check_membership, check_same_patient, series_patient
from tools.workflow.records import DicomPatient, StudyRecord

pytestmark = pytest.mark.unit

STUDY, SERIES = "1.2.3", "1.2.3.4"


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2", "0", "1" + ".2" * 31])
def test_dicom_uids_accepted(uid: str) -> None:
    assert check_dicom_uid(uid, "x") == uid


@pytest.mark.parametrize(
    "uid", ["", "1.2/../3", "../../etc", "1..2", "1.2.", ".1", "1.2 ", "1.2\n3", "1" + ".2" * 32, None, "1.2?x=1"]
)
def test_dicom_uids_refused_naming_the_source(uid: str | None) -> None:
    with pytest.raises(UnsafeIdentifierError, match="the SOP Instance UID in series 9"):
        check_dicom_uid(uid, "the SOP Instance UID in series 9")


@pytest.mark.parametrize("value", ["abc-1.2", "A" * 64])
def test_fhir_ids_accepted(value: str) -> None:
    assert check_fhir_id(value, "x") == value


@pytest.mark.parametrize("value", ["", "a/b", "../x", "a b", "A" * 65, "a?b=c", "a#b"])
def test_fhir_ids_refused_naming_the_source(value: str) -> None:
    with pytest.raises(UnsafeIdentifierError, match="the subject of ImagingStudy/s1"):
        check_fhir_id(value, "the subject of ImagingStudy/s1")


def _instance(sop: str, study: str = STUDY, series: str = SERIES, pid: str = "MRN-1", issuer: str | None = None) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = sop, study, series
    ds.PatientID, ds.PatientName = pid, "Doe^Jane"
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    return ds


def test_membership_accepts_exactly_the_listed_instances() -> None:
    check_membership([_instance("1.1"), _instance("1.2")], STUDY, SERIES, ["1.2", "1.1"])


@pytest.mark.parametrize(
    ("instances", "words"),
    [
        ([_instance("1.1"), _instance("1.2", series="9.9")], "series 9.9"),
        ([_instance("1.1"), _instance("1.2", study="8.8")], "study 8.8"),
        ([_instance("1.1"), _instance("1.2"), _instance("1.3")], "1 of them not in its own listing"),
        ([_instance("1.1")], "1 listed ones missing"),
    ],
)
def test_membership_refuses_strangers_and_gaps(instances: list[Dataset], words: str) -> None:
    with pytest.raises(StudyFailure, match=words):
        check_membership(instances, STUDY, SERIES, ["1.1", "1.2"])


def test_membership_refuses_a_slash_before_naming_a_file() -> None:
    with pytest.raises(UnsafeIdentifierError, match="a SOP Instance UID the PACS sent in series"):
        check_membership([_instance("1.1/../../x")], STUDY, SERIES, ["1.1/../../x"])


def test_series_patient_is_one_patient() -> None:
    patient = series_patient([_instance("1.1", issuer="HOSP"), _instance("1.2", issuer="HOSP")], SERIES)
    assert patient == DicomPatient(patient_id="MRN-1", issuer="HOSP", name="Doe Jane")
    with pytest.raises(StudyFailure, match="MRN-1, MRN-2"):
        series_patient([_instance("1.1"), _instance("1.2", pid="MRN-2")], SERIES)
    with pytest.raises(StudyFailure, match="does not name one patient"):
        series_patient([_instance("1.1", pid="")], SERIES)


def _study(patient_id: str | None, issuer: str | None = None) -> StudyRecord:
    return StudyRecord(
        imaging_study_id="s1", study_instance_uid=STUDY, status="registered", version="1",
        patient_reference="Patient/p-a", patient_display_name=None, patient_id=patient_id, patient_issuer=issuer,
        started=None, description=None,
    )


def test_same_patient_passes_and_issuer_is_compared_only_where_both_name_one() -> None:
    check_same_patient(_study("MRN-1"), DicomPatient(patient_id="MRN-1", issuer="HOSP"), SERIES, "urn:mrn")
    check_same_patient(_study("MRN-1", "HOSP"), DicomPatient(patient_id="MRN-1"), SERIES, "urn:mrn")
    with pytest.raises(StudyFailure, match="issuer HOSP.*IssuerOfPatientID OTHER"):
        check_same_patient(_study("MRN-1", "HOSP"), DicomPatient(patient_id="MRN-1", issuer="OTHER"), SERIES, "urn:mrn")


@pytest.mark.parametrize("fhir_id", ["MRN-2", None])
def test_another_patient_is_refused_naming_both(fhir_id: str | None) -> None:
    with pytest.raises(StudyFailure) as caught:
        check_same_patient(_study(fhir_id), DicomPatient(patient_id="MRN-1"), SERIES, "urn:mrn")
    message = str(caught.value)
    assert f"Patient/p-a identifier {fhir_id or '(none)'} in system urn:mrn" in message
    assert "DICOM PatientID MRN-1" in message and "Nothing was segmented" in message


def test_a_fhir_read_answered_with_another_record_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"resourceType": "Patient", "id": "someone-else", "meta": {"versionId": "1"}}
        return httpx.Response(200, content=json.dumps(body).encode(), headers={"Content-Type": "application/fhir+json"})

    retry = RetryPolicy(attempts=1, backoff_s=0, max_backoff_s=0, timeout_s=5)
    with FhirClient("http://fhir.test/fhir", retry=retry, transport=httpx.MockTransport(handler)) as fhir:
        with pytest.raises(FhirError, match="answered with Patient/someone-else"):
            fhir.read("Patient", "p-a")


_HOSTILE = {
    "patient_reference": "Patient/p-a",
    "patient_display_name": "[bold red]APPROVED[/bold red] *x*",
    "patient_id": "MRN [/x] 1",
    "dicom_patient_name": "Doe [link=http://evil]Jane[/link]",
    "dicom_patient_id": "MRN_1 | <b>",
    "dicom_issuer_of_patient_id": "[red]HOSP",
}


def test_card_identity_lines_show_record_text_literally() -> None:
    class R:
        pass

    request = R()
    request.__dict__.update(_HOSTILE)
    console = Console(file=io.StringIO(), width=400, color_system=None)
    console.print(_patient_identities(request))  # type: ignore[arg-type]
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    for value in _HOSTILE.values():
        assert value in shown, shown
    markdown = _patient_identities_markdown(_HOSTILE)
    assert "[bold red]" not in markdown and "\\[bold red\\]" in markdown
    assert "<b>" not in markdown and "\\|" in markdown and "MRN\\_1" in markdown
