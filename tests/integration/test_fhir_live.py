"""FhirClient against the real FHIR R4 server started by the test command (`live_settings`).

Every test tags what it creates with its own identifier system (`urn:uuid:<random>`), and
searches by `identifier=<system>|` (a token with an empty code matches any value in that
system, FHIR R4 search.html "token"), so tests never see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient

from agent.parts import fhir_client
from agent.settings import Settings
from tools.fhir.client import FhirClient
from tools.fhir.errors import FhirConflictError, FhirNotFoundError

pytestmark = pytest.mark.integration

DCM = "http://dicom.nema.org/resources/ontology/DCM"


@pytest.fixture
def system() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


@pytest.fixture
def client(live_settings: Settings) -> Iterator[FhirClient]:
    with fhir_client(live_settings) as fhir:
        yield fhir


def new_patient(system: str, value: str) -> Patient:
    return Patient(identifier=[{"system": system, "value": value}], active=True)


def new_study(system: str, value: str, patient_id: str, status: str, modality: str) -> ImagingStudy:
    coding = {"system": DCM, "code": modality}
    return ImagingStudy(
        identifier=[{"system": system, "value": value}],
        status=status,
        subject={"reference": f"Patient/{patient_id}"},
        modality=[coding],
        # The R4 `modality` search parameter is ImagingStudy.series.modality, not .modality.
        series=[{"uid": f"2.25.{uuid.uuid4().int}", "modality": coding}],
    )


def test_capabilities_answer_as_a_health_check(client: FhirClient) -> None:
    statement = client.capabilities()
    assert statement.fhirVersion.startswith("4.0")
    assert statement.kind == "instance"


def test_conditional_create_twice_returns_the_same_resource(client: FhirClient, system: str) -> None:
    condition = f"identifier={system}|P1"
    first = client.create(new_patient(system, "P1"), if_none_exist=condition)
    second = client.create(new_patient(system, "P1"), if_none_exist=condition)

    assert isinstance(first, Patient)
    assert first.id and first.id == second.id
    assert first.meta.versionId == second.meta.versionId == "1"
    assert [p.id for p in client.search("Patient", {"identifier": f"{system}|"})] == [first.id]


def test_search_follows_pages(live_settings: Settings, system: str) -> None:
    with fhir_client(live_settings.model_copy(update={"fhir_page_size": 3})) as client:
        created = {client.create(new_patient(system, f"P{i}")).id for i in range(7)}
        params = {"identifier": f"{system}|"}

        first_page = client.search_bundle("Patient", params)
        found = client.search("Patient", params)
        capped = client.search("Patient", params, max_results=4)

    assert first_page.entry is not None and len(first_page.entry) == 3
    assert any(link.relation == "next" for link in first_page.link or [])
    assert len(found) == 7
    assert {p.id for p in found} == created
    assert len(capped) == 4
    assert {p.id for p in capped} <= created


def test_read_returns_the_resource_and_its_version(client: FhirClient, system: str) -> None:
    created = client.create(new_patient(system, "R1"))
    read = client.read("Patient", created.id)
    assert isinstance(read, Patient)
    assert read.id == created.id
    assert read.meta.versionId == "1"
    assert read.identifier[0].system == system


def test_update_with_if_match(client: FhirClient, system: str) -> None:
    created = client.create(new_patient(system, "U1"))
    stale_version = created.meta.versionId

    created.active = False
    updated = client.update(created, if_match=stale_version)
    assert updated.id == created.id
    assert updated.active is False
    assert updated.meta.versionId != stale_version

    with pytest.raises(FhirConflictError) as info:
        client.update(created, if_match=stale_version)
    assert info.value.status == 412
    assert f"Patient/{created.id}" in str(info.value)
    assert "Someone else changed the resource" in str(info.value)
    assert client.read("Patient", created.id).meta.versionId == updated.meta.versionId


def test_transaction_with_two_conditional_creates_is_idempotent(client: FhirClient, system: str) -> None:
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    study = new_study(system, "S1", "placeholder", "registered", "CT")
    study.subject.reference = patient_urn  # resolved by the server to the created Patient
    bundle = Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": patient_urn,
                    "resource": new_patient(system, "T1").model_dump(),
                    "request": {
                        "method": "POST",
                        "url": "Patient",
                        "ifNoneExist": f"identifier={system}|T1",
                    },
                },
                {
                    "resource": study.model_dump(),
                    "request": {
                        "method": "POST",
                        "url": "ImagingStudy",
                        "ifNoneExist": f"identifier={system}|S1",
                    },
                },
            ],
        }
    )

    first = client.transaction(bundle)
    second = client.transaction(bundle)

    assert first.type == "transaction-response"
    assert [e.response.status.split()[0] for e in first.entry] == ["201", "201"]
    assert [e.response.status.split()[0] for e in second.entry] == ["200", "200"]
    patient_id, study_id = (e.resource.id for e in first.entry)
    assert [e.resource.id for e in second.entry] == [patient_id, study_id]
    stored = client.read("ImagingStudy", study_id)
    assert stored.subject.reference == f"Patient/{patient_id}"


def test_imaging_study_search_by_status_and_modality(client: FhirClient, system: str) -> None:
    patient_id = client.create(new_patient(system, "I1")).id
    for status in ("registered", "available"):
        for modality in ("CT", "MR"):
            client.create(new_study(system, f"{status}-{modality}", patient_id, status, modality))

    for modality_token in ("CT", f"{DCM}|CT"):
        found = client.search(
            "ImagingStudy", {"identifier": f"{system}|", "status": "registered", "modality": modality_token}
        )
        assert [s.identifier[0].value for s in found] == ["registered-CT"], modality_token


def test_read_of_a_missing_resource_raises_not_found(client: FhirClient) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(FhirNotFoundError) as info:
        client.read("Patient", missing)
    assert info.value.status == 404
    assert f"Patient/{missing}" in str(info.value)
