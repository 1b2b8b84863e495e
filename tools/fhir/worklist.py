"""The work list: ImagingStudies waiting in FHIR for the agent.

Some FHIR servers silently ignore search parameters they do not support; the work list is
therefore filtered again here on the parsed resources, so an ignored parameter can widen the
download but never the result.
"""

from __future__ import annotations

from collections.abc import Mapping

from fhir.resources.R4B.imagingstudy import ImagingStudy
from pydantic import BaseModel

from tools.fhir.builders import DICOM_UID_SYSTEM
from tools.fhir.client import FhirClient

DEFAULT_WORKLIST_QUERY: dict[str, str] = {"status": "registered", "modality": "CT"}


class WorklistItem(BaseModel):
    """One ImagingStudy as the planner and the UI see it: identifiers and counts, no names."""

    imaging_study_id: str
    study_instance_uid: str | None
    status: str
    patient_reference: str | None
    started: str | None
    description: str | None
    modalities: list[str]
    number_of_series: int | None
    number_of_instances: int | None


def study_instance_uid(study: ImagingStudy) -> str | None:
    for ident in study.identifier or []:
        if ident.system == DICOM_UID_SYSTEM and ident.value and ident.value.startswith("urn:oid:"):
            return ident.value.removeprefix("urn:oid:")
    return None


def to_worklist_item(study: ImagingStudy) -> WorklistItem:
    return WorklistItem(
        imaging_study_id=str(study.id),
        study_instance_uid=study_instance_uid(study),
        status=str(study.status),
        patient_reference=study.subject.reference if study.subject else None,
        started=str(study.started) if study.started else None,
        description=study.description,
        modalities=sorted({str(c.code) for c in study.modality or [] if c.code}),
        number_of_series=study.numberOfSeries,
        number_of_instances=study.numberOfInstances,
    )


def _matches(item: WorklistItem, query: Mapping[str, str]) -> bool:
    status = query.get("status")
    if status and item.status not in status.split(","):
        return False
    modality = query.get("modality")
    if modality:
        wanted = {m.split("|")[-1] for m in modality.split(",")}
        if not wanted & set(item.modalities):
            return False
    return True


def find_worklist(client: FhirClient, query: Mapping[str, str] | None = None) -> list[WorklistItem]:
    """ImagingStudies matching `query` (default: status registered, modality CT)."""
    params = dict(DEFAULT_WORKLIST_QUERY if query is None else query)
    items = [to_worklist_item(s) for s in client.search("ImagingStudy", params)]
    return [item for item in items if _matches(item, params)]
