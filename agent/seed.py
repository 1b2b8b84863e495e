"""Demo and test data: DICOM into the PACS, Patient + ImagingStudy into FHIR. Idempotent.

A second run stores no instance twice (QIDO first) and creates no FHIR resource twice
(search by identifier, then a conditional create).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient
from pydantic import BaseModel
from pydicom import Dataset

from agent.parts import fhir_client, pacs_client
from agent.settings import Settings
from tools.dicomweb.client import DicomwebClient
from tools.fhir.builders import imaging_study_from_dicom, patient_from_dicom, uid_search_token
from tools.fhir.client import FhirClient
from tools.fhir.errors import FhirError
from tools.fhir.search_values import condition, token
from tools.http.retry import ServiceUnavailableError
from tools.imaging.volume import read_series_dir
from tools.phantom import PhantomSpec, make_phantom, save_masks, write_phantom

log = logging.getLogger(__name__)


class SeedError(RuntimeError):
    """Seeding failed; the message names the folder or study and what to do."""


class SeedResult(BaseModel):
    study_instance_uid: str
    patient_id: str
    patient_resource_id: str
    series_count: int
    instance_count: int
    stored: int
    already_present: int
    imaging_study_id: str
    imaging_study_created: bool


def _store_missing(pacs: DicomwebClient, study_uid: str, datasets: Sequence[Dataset]) -> tuple[int, int]:
    present = {i.sop_instance_uid for i in pacs.search_instances(study_uid)}
    missing = [ds for ds in datasets if str(ds.SOPInstanceUID) not in present]
    if missing:
        result = pacs.store(missing)
        if result.failed:
            reasons = "; ".join(f"{f.sop_instance_uid}: {f.reason}" for f in result.failed[:5])
            raise SeedError(
                f"the PACS refused {len(result.failed)} of {len(missing)} instances of study {study_uid} "
                f"({reasons}). Check the files and the PACS log, then seed again: stored instances are kept."
            )
    return len(missing), len(datasets) - len(missing)


def _ensure_patient(fhir: FhirClient, ds: Dataset, settings: Settings) -> Patient:
    patient = patient_from_dicom(ds, settings.patient_identifier_system)
    search = token(settings.patient_identifier_system, str(ds.PatientID))
    found = fhir.search("Patient", {"identifier": search})
    if found:
        return found[0]
    return fhir.create(patient, if_none_exist=condition("identifier", search))


def _ensure_imaging_study(
    fhir: FhirClient, series: list[list[Dataset]], patient_ref: str
) -> tuple[ImagingStudy, bool]:
    search = uid_search_token(str(series[0][0].StudyInstanceUID))
    found = fhir.search("ImagingStudy", {"identifier": search})
    if found:
        return found[0], False
    study = imaging_study_from_dicom(series, patient_ref)
    return fhir.create(study, if_none_exist=condition("identifier", search)), True


def seed_datasets(settings: Settings, datasets: Sequence[Dataset]) -> list[SeedResult]:
    """Store the instances in the PACS and register one ImagingStudy per study in FHIR."""
    by_study: dict[str, dict[str, list[Dataset]]] = defaultdict(lambda: defaultdict(list))
    for ds in datasets:
        by_study[str(ds.StudyInstanceUID)][str(ds.SeriesInstanceUID)].append(ds)
    results: list[SeedResult] = []
    try:
        with pacs_client(settings) as pacs, fhir_client(settings) as fhir:
            for study_uid, series_map in by_study.items():
                instances = [ds for s in series_map.values() for ds in s]
                stored, present = _store_missing(pacs, study_uid, instances)
                patient = _ensure_patient(fhir, instances[0], settings)
                study, created = _ensure_imaging_study(fhir, list(series_map.values()), f"Patient/{patient.id}")
                log.info("seeded study %s: %d stored, %d already present", study_uid, stored, present)
                results.append(
                    SeedResult(
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
    except (ServiceUnavailableError, FhirError, ValueError) as exc:
        raise SeedError(f"seeding stopped: {exc}") from exc
    return results


def seed_folder(settings: Settings, folder: Path) -> list[SeedResult]:
    try:
        datasets = read_series_dir(folder)
    except (FileNotFoundError, ValueError) as exc:
        raise SeedError(f"cannot read DICOM from {folder}: {exc}") from exc
    return seed_datasets(settings, datasets)


def phantom_dir(settings: Settings, seed: int) -> Path:
    return settings.run_dir / "demo" / f"phantom-seed-{seed}"


def seed_phantom(settings: Settings, seed: int = 0) -> SeedResult:
    """Make (once) the synthetic chest CT for `seed`, keep its exact lung masks, and seed it."""
    folder = phantom_dir(settings, seed)
    dicom_dir = folder / "dicom"
    if not any(dicom_dir.glob("*.dcm")):
        phantom = make_phantom(PhantomSpec(seed=seed))
        write_phantom(phantom, dicom_dir)
        save_masks(phantom, folder / "lung_masks.npz")
    return seed_folder(settings, dicom_dir)[0]
