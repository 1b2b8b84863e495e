"""Local PACS and FHIR servers for development, tests and the demo."""

from __future__ import annotations

from agent.services import process
from agent.services.local import fhir_spec, local_services, orthanc_spec
from agent.services.process import ServiceError, ServiceSpec, ServiceStatus
from agent.settings import Settings


def up(settings: Settings) -> list[ServiceStatus]:
    """Start both servers (or find them running) and wait until both answer."""
    return [process.start(spec, settings.service_start_timeout_s) for spec in local_services(settings)]


def down(settings: Settings) -> list[tuple[str, bool]]:
    """Stop the servers we started, by their PID files. Returns (name, was running)."""
    return [(spec.name, process.stop(spec)) for spec in local_services(settings)]


def status(settings: Settings) -> list[ServiceStatus]:
    """Whether each server runs, answers its health URL, and where its log is."""
    return [process.status(spec) for spec in local_services(settings)]


__all__ = [
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
