"""Local PACS and FHIR servers for development, tests and the demo; PostgreSQL and Redis with `--scale`."""

from __future__ import annotations

from agent.services import process
from agent.services.local import fhir_spec, local_services, orthanc_spec
from agent.services.process import ServiceError, ServiceSpec, ServiceStatus
from agent.services.scale import (
    after_start,
    broker_url_file,
    database_url_file,
    prepare_postgres,
    scale_services,
    scale_services_made,
)
from agent.settings import Settings


def up(settings: Settings, scale: bool = False) -> list[ServiceStatus]:
    """Start the servers (or find them running) and wait until each answers.

    `scale` adds PostgreSQL and Redis (`services up --scale`)."""
    specs = local_services(settings)
    if scale:
        prepare_postgres(settings)
        specs += scale_services(settings)
    rows = [process.start(spec, settings.service_start_timeout_s) for spec in specs]
    if scale:
        after_start(settings)
    return rows


def _all_services(settings: Settings) -> list[ServiceSpec]:
    return local_services(settings) + (scale_services(settings) if scale_services_made(settings) else [])


def down(settings: Settings) -> list[tuple[str, bool]]:
    """Stop the servers we started, by their PID files. Returns (name, was running)."""
    return [(spec.name, process.stop(spec)) for spec in _all_services(settings)]


def status(settings: Settings) -> list[ServiceStatus]:
    """Whether each server runs, answers its health URL, and where its log is."""
    return [process.status(spec) for spec in _all_services(settings)]


__all__ = [
    "broker_url_file",
    "database_url_file",
    "ServiceError",
    "ServiceSpec",
    "ServiceStatus",
    "down",
    "fhir_spec",
    "local_services",
    "orthanc_spec",
    "status",
    "up",
]
