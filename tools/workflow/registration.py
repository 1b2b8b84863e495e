"""Images into the work list: DICOM instances stored in the PACS, Patient + ImagingStudy in FHIR.

Idempotent, so a second push or a second seed changes nothing: instances already in the PACS
(QIDO first) are not stored again, and the Patient (by identifier in the configured system) and
the ImagingStudy (by Study Instance UID) are found before a conditional create.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient
from pydantic import BaseModel
from pydicom import Dataset

from tools.dicomweb.client import DicomwebClient
from tools.fhir.builders import imaging_study_from_dicom, patient_from_dicom, uid_search_token
from tools.fhir.client import FhirClient
from tools.fhir.search_values import condition, token

log = logging.getLogger(__name__)


class RegistrationError(RuntimeError):
    """The PACS refused instances; the message names the study and what to do."""


class Registered(BaseModel):
    """One study as registered: what the PACS got and which FHIR resources stand for it."""

    study_instance_uid: str
    patient_id: str
    patient_resource_id: str
    series_count: int
    instance_count: int
    stored: int
    already_present: int
    imaging_study_id: str
    imaging_study_created: bool


def store_missing(pacs: DicomwebClient, study_uid: str, datasets: Sequence[Dataset]) -> tuple[int, int]:
    """Store the instances the PACS does not hold yet; (stored, already present)."""
    present = {i.sop_instance_uid for i in pacs.search_instances(study_uid)}
    missing = [ds for ds in datasets if str(ds.SOPInstanceUID) not in present]
    if missing:
        result = pacs.store(missing)
        if result.failed:
            reasons = "; ".join(f"{f.sop_instance_uid}: {f.reason}" for f in result.failed[:5])
            raise RegistrationError(
                f"the PACS refused {len(result.failed)} of {len(missing)} instances of study {study_uid} "
                f"({reasons}). Check the files and the PACS log, then send them again: stored instances are kept."
            )
    return len(missing), len(datasets) - len(missing)


def ensure_patient(fhir: FhirClient, ds: Dataset, identifier_system: str) -> Patient:
    """The Patient with the instance's PatientID in `identifier_system`, created if there is none."""
    patient = patient_from_dicom(ds, identifier_system)
    search = token(identifier_system, str(ds.PatientID))
    found = fhir.search("Patient", {"identifier": search})
    if found:
        return found[0]
    return fhir.create(patient, if_none_exist=condition("identifier", search))


def ensure_imaging_study(fhir: FhirClient, series: list[list[Dataset]], patient_ref: str) -> tuple[ImagingStudy, bool]:
    """The ImagingStudy of the study (status `registered` when new); whether it was created."""
    search = uid_search_token(str(series[0][0].StudyInstanceUID))
    found = fhir.search("ImagingStudy", {"identifier": search})
    if found:
        return found[0], False
    study = imaging_study_from_dicom(series, patient_ref)
    return fhir.create(study, if_none_exist=condition("identifier", search)), True


def register_datasets(
    pacs: DicomwebClient, fhir: FhirClient, datasets: Sequence[Dataset], identifier_system: str, *, store: bool = True
) -> list[Registered]:
    """Register one ImagingStudy per study of `datasets`, storing the instances in the PACS first when `store`."""
    by_study: dict[str, dict[str, list[Dataset]]] = defaultdict(lambda: defaultdict(list))
    for ds in datasets:
        by_study[str(ds.StudyInstanceUID)][str(ds.SeriesInstanceUID)].append(ds)
    results: list[Registered] = []
    for study_uid, series_map in by_study.items():
        instances = [ds for s in series_map.values() for ds in s]
        stored, present = store_missing(pacs, study_uid, instances) if store else (0, len(instances))
        patient = ensure_patient(fhir, instances[0], identifier_system)
        study, created = ensure_imaging_study(fhir, list(series_map.values()), f"Patient/{patient.id}")
        log.info("registered study %s: %d stored, %d already present", study_uid, stored, present)
        results.append(
            Registered(
                study_instance_uid=study_uid,
                patient_id=str(instances[0].PatientID),
                patient_resource_id=str(patient.id),
                series_count=len(series_map),
                instance_count=len(instances),
                stored=stored,
                already_present=present,
                imaging_study_id=str(study.id),
                imaging_study_created=created,
            )
        )
    return results
