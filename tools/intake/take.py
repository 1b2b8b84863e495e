"""A complete received series into the work list: routed, stored in the PACS, registered in FHIR.

A plain step (clients injected): the caller starts the study job that waits for approval, as
every other job does.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel
from pydicom import dcmread

from tools.dicomweb.client import DicomwebClient
from tools.fhir.client import FhirClient
from tools.intake.inbox import ReceivedSeries
from tools.intake.routing import RoutingRule, route
from tools.segmentation.catalog import EngineName
from tools.workflow.registration import register_datasets

log = logging.getLogger(__name__)


class TakenSeries(BaseModel):
    """What a received series became: a registered ImagingStudy to process with `engine`, or nothing."""

    study_instance_uid: str
    series_instance_uid: str
    instances: int
    outcome: Literal["registered", "not routed"]
    rule: str | None = None
    engine: EngineName | None = None
    imaging_study_id: str | None = None
    detail: str


def take_series(
    series: ReceivedSeries,
    rules: list[RoutingRule],
    pacs: DicomwebClient,
    fhir: FhirClient,
    identifier_system: str,
    *,
    store_to_pacs: bool,
) -> TakenSeries:
    """Route `series`; when a rule takes it, store it (if asked) and register its Patient + ImagingStudy."""
    datasets = [dcmread(path) for path in series.files()]
    base = {
        "study_instance_uid": series.study_instance_uid,
        "series_instance_uid": series.series_instance_uid,
        "instances": len(datasets),
    }
    rule = route(datasets[0], rules)
    if rule is None:
        detail = (
            f"series {series.series_instance_uid} (Modality {datasets[0].get('Modality', '?')}, Body Part "
            f"{datasets[0].get('BodyPartExamined', '-')}) matches no routing rule; kept in {series.folder}, not "
            "processed. Add a rule (IMAGING_AGENT_INTAKE_ROUTES) to process series like it."
        )
        return TakenSeries(**base, outcome="not routed", detail=detail)
    [registered] = register_datasets(pacs, fhir, datasets, identifier_system, store=store_to_pacs)
    log.info(
        "intake: series %s of study %s (%d instances) -> ImagingStudy/%s by rule %r",
        series.series_instance_uid, series.study_instance_uid, len(datasets), registered.imaging_study_id, rule.name,
    )
    return TakenSeries(
        **base,
        outcome="registered",
        rule=rule.name,
        engine=rule.engine,
        imaging_study_id=registered.imaging_study_id,
        detail=f"ImagingStudy/{registered.imaging_study_id} ({registered.stored} instances stored in the PACS)",
    )
