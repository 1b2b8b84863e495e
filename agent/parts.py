"""Builds the parts of imaging-agent from the settings: the one place that turns configuration
into clients. Everything below `agent/` takes these parts as parameters and never reads settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from agent.settings import Settings

# Each builder imports its own stack: `imaging-agent contour` needs the engines only, and the
# FHIR, DICOMweb and DIMSE clients and the database layer cost more to import than its whole
# output stage (issue 11).
if TYPE_CHECKING:
    from sqlalchemy import Engine

    from graphs.runtime import JobQueue
    from tools.dicomweb.client import DicomwebClient
    from tools.dimse.client import DimseClient
    from tools.fhir.client import FhirClient
    from tools.reporting.cxrreportgen import CxrReportGenDrafter
    from tools.results.package import OutputFormat
    from tools.segmentation.catalog import EngineCatalog
    from tools.segmentation.input_check import MedImageInsightChecker
    from tools.workflow.engine_jobs import SegmentationQueue
    from tools.workflow.pipeline import StudyServices


def fhir_client(settings: Settings) -> FhirClient:
    """The FHIR R4 client for `settings.fhir_url`, with its auth, retry policy and page size."""
    from agent.telemetry import http_transport
    from tools.fhir.client import FhirClient

    return FhirClient(
        settings.fhir_url,
        auth=settings.fhir_http_auth(),
        retry=settings.retry_policy(),
        page_size=settings.fhir_page_size,
        transport=http_transport(),  # a client span per request when tracing is on
    )


def pacs_client(settings: Settings) -> DicomwebClient:
    """The DICOMweb client for `settings.dicomweb_url`, with its auth, retry policy and STOW batch size."""
    from tools.dicomweb.client import DicomwebClient

    return DicomwebClient(
        settings.dicomweb_url,
        auth=settings.dicomweb_http_auth(),
        retry=settings.retry_policy(),
        stow_batch_size=settings.dicomweb_stow_batch_size,
    )


def dimse_client(settings: Settings) -> DimseClient:
    """The DIMSE client for the configured PACS AE (C-ECHO, C-STORE, C-FIND)."""
    from tools.dimse.client import DimseClient

    return DimseClient(
        settings.dimse_host,
        settings.dimse_port,
        settings.dimse_called_aet,
        settings.dimse_calling_aet,
        settings.http_timeout_s,
    )


def engine_catalog(settings: Settings) -> EngineCatalog:
    """The segmentation engines, built by name from the settings' engine options."""
    from tools.segmentation.catalog import EngineCatalog

    return EngineCatalog(settings.engine_options())


def database(settings: Settings) -> Engine:
    """The engine over the runtime's database (SQLite by default, PostgreSQL when configured).

    Built once per runtime and handed to every store over it; the caller disposes of it."""
    from tools.state.database import state_engine

    return state_engine(settings.state_database_url())


@contextmanager
def migrated_database(settings: Settings) -> Iterator[Engine]:
    """`database` with its schema brought up to date, disposed afterwards: for a command that reads or
    writes the project's tables without a runtime (accounts, the audit index)."""
    from tools.state.migrate import upgrade

    engine = database(settings)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()


def job_queue(settings: Settings) -> JobQueue | None:
    """The workers' queue when a broker is configured; None: jobs run in the process that starts them."""
    if settings.broker_url is None:
        return None
    # Celery is imported only where there are workers: the demo never loads it.
    from agent.workers.celery_app import build_celery_app
    from agent.workers.queue import CeleryJobQueue

    return CeleryJobQueue(build_celery_app(settings))


def optional_formats(settings: Settings) -> tuple[OutputFormat, ...]:
    """The objects the settings add to every job's results (both off by default)."""
    wanted: list[OutputFormat] = []
    if settings.result_overlay:
        wanted.append("overlay")
    if settings.result_kos:
        wanted.append("ko")
    return tuple(wanted)


def segmentation_queue(settings: Settings) -> SegmentationQueue | None:
    """The `engines` queue when engine workers segment the jobs; None: each job's own worker does."""
    if settings.engine_queue == "inline":
        return None
    from agent.workers.celery_app import build_celery_app
    from agent.workers.queue import CelerySegmentationQueue

    return CelerySegmentationQueue(build_celery_app(settings))


def report_drafter(settings: Settings) -> CxrReportGenDrafter | None:
    """CXRReportGen when its endpoint is set: chest radiograph studies then get draft findings."""
    if not settings.cxrreportgen_url:
        return None
    from tools.reporting.cxrreportgen import CxrReportGenDrafter

    key = settings.cxrreportgen_key.get_secret_value() if settings.cxrreportgen_key else None
    return CxrReportGenDrafter(
        settings.cxrreportgen_url, key, timeout_s=settings.cxrreportgen_timeout_s, retry=settings.retry_policy()
    )


def engine_endpoints(settings: Settings) -> dict[str, str]:
    """The hosts of the engines that call remote endpoints, for the card and the Provenance."""
    from urllib.parse import urlsplit

    return {"medimageparse": urlsplit(settings.medimageparse_url).netloc} if settings.medimageparse_url else {}


def input_checker(settings: Settings) -> MedImageInsightChecker | None:
    """MedImageInsight when its endpoint is set and the check is not off."""
    if not settings.medimageinsight_url or settings.input_check == "off":
        return None
    from tools.segmentation.input_check import MedImageInsightChecker

    key = settings.medimageinsight_key.get_secret_value() if settings.medimageinsight_key else None
    return MedImageInsightChecker(
        settings.medimageinsight_url, key, timeout_s=settings.medimageinsight_timeout_s, retry=settings.retry_policy()
    )


def study_services(settings: Settings, engine: Engine) -> StudyServices:
    """Everything a study job talks to: FHIR, the PACS, the engines, the decision store and the work store.

    The caller owns the clients and the engine and closes them (AgentRuntime does, on close).
    """
    from tools.workflow.decisions import DecisionStore
    from tools.workflow.lineage import LineageStore
    from tools.workflow.pipeline import StudyServices
    from tools.workflow.result_stores import DicomwebResults, DimseResults

    pacs = pacs_client(settings)
    results = DimseResults(dimse_client(settings)) if settings.pacs_store == "dimse" else DicomwebResults(pacs)
    return StudyServices(
        fhir=fhir_client(settings),
        pacs=pacs,
        results=results,
        engines=engine_catalog(settings),
        decisions=DecisionStore(engine),
        lineage=LineageStore(engine),
        work_root=settings.work_root,
        default_engine=settings.default_engine,
        patient_identifier_system=settings.patient_identifier_system,
        fallback_engines=tuple(settings.fallback_engines),
        exclude_gtv=settings.exclude_gtv,
        optional_formats=optional_formats(settings),
        engine_queue=segmentation_queue(settings),
        report_drafter=report_drafter(settings),
        input_checker=input_checker(settings),
        engine_endpoints=engine_endpoints(settings),
        refuse_unexpected_input=settings.input_check == "refuse",
    )
