"""Full listings of what the PACS and the FHIR server hold, to prove nothing was written."""

from __future__ import annotations

from collections.abc import Sequence

from agent.parts import fhir_client, pacs_client
from agent.settings import Settings
from tools.results.assessment import ASSESSMENT_SERIES_NUMBER

FHIR_TYPES = (
    "Patient",
    "ImagingStudy",
    "DiagnosticReport",
    "Observation",
    "Provenance",
    "AuditEvent",
    "Device",
    "Practitioner",
    "Task",
)


def pacs_listing(settings: Settings) -> list[tuple[str, str, str]]:
    """Every (study, series, SOP instance) in the PACS."""
    rows: list[tuple[str, str, str]] = []
    with pacs_client(settings) as pacs:
        for study in pacs.search_studies():
            for instance in pacs.search_instances(study.study_instance_uid):
                rows.append((study.study_instance_uid, "", instance.sop_instance_uid))
    return sorted(rows)


def fhir_listing(settings: Settings, exclude: Sequence[str] = ()) -> dict[str, list[tuple[str, str]]]:
    """Every resource (id, version) of the types the agent can write."""
    listing: dict[str, list[tuple[str, str]]] = {}
    with fhir_client(settings) as fhir:
        for resource_type in FHIR_TYPES:
            if resource_type in exclude:
                continue
            listing[resource_type] = sorted(
                (str(r.id), str(r.meta.versionId if r.meta else "")) for r in fhir.search(resource_type, {})
            )
    return listing


def result_series(settings: Settings, study_instance_uid: str) -> list[str]:
    """Modalities of the AI result series of a study (not the CT, not the assessment record)."""
    with pacs_client(settings) as pacs:
        return [
            s.modality or "?"
            for s in pacs.search_series(study_instance_uid)
            if s.modality != "CT" and s.series_number != ASSESSMENT_SERIES_NUMBER
        ]


def assessment_instances(settings: Settings, study_instance_uid: str) -> list[str]:
    """SOP Instance UIDs of the study's AI result assessment records (tools/results/assessment.py)."""
    with pacs_client(settings) as pacs:
        return [
            i.sop_instance_uid
            for s in pacs.search_series(study_instance_uid)
            if s.series_number == ASSESSMENT_SERIES_NUMBER
            for i in pacs.search_instances(study_instance_uid, s.series_instance_uid)
        ]
