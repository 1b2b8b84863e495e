"""Demo and test data: DICOM into the PACS, Patient + ImagingStudy into FHIR. Idempotent
(tools/workflow/registration.py: a second run stores and creates nothing twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom import Dataset

from agent.parts import fhir_client, pacs_client
from agent.settings import Settings
from tools.fhir.errors import FhirError
from tools.http.retry import ServiceUnavailableError
from tools.imaging.volume import read_series_dir
from tools.phantom import PhantomSpec, make_phantom, save_masks, write_phantom
from tools.workflow.registration import Registered, RegistrationError, register_datasets


class SeedError(RuntimeError):
    """Seeding failed; the message names the folder or study and what to do."""


def seed_datasets(settings: Settings, datasets: Sequence[Dataset]) -> list[Registered]:
    """Store the instances in the PACS and register one ImagingStudy per study in FHIR."""
    try:
        with pacs_client(settings) as pacs, fhir_client(settings) as fhir:
            return register_datasets(pacs, fhir, datasets, settings.patient_identifier_system)
    except (RegistrationError, ServiceUnavailableError, FhirError, ValueError) as exc:
        raise SeedError(f"seeding stopped: {exc}") from exc


def seed_folder(settings: Settings, folder: Path) -> list[Registered]:
    try:
        datasets = read_series_dir(folder)
    except (FileNotFoundError, ValueError) as exc:
        raise SeedError(f"cannot read DICOM from {folder}: {exc}") from exc
    return seed_datasets(settings, datasets)


def phantom_dir(settings: Settings, seed: int) -> Path:
    return settings.run_dir / "demo" / f"phantom-seed-{seed}"


def seed_phantom(settings: Settings, seed: int = 0) -> Registered:
    """Make (once) the synthetic chest CT for `seed`, keep its exact lung masks, and seed it."""
    folder = phantom_dir(settings, seed)
    dicom_dir = folder / "dicom"
    if not any(dicom_dir.glob("*.dcm")):
        phantom = make_phantom(PhantomSpec(seed=seed))
        write_phantom(phantom, dicom_dir)
        save_masks(phantom, folder / "lung_masks.npz")
    return seed_folder(settings, dicom_dir)[0]
