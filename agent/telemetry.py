"""OpenTelemetry traces of the processes that run jobs: the SDK, set up once when the process starts.

`configure_tracing` runs at the start of every CLI command (agent/cli.py) and of the API service
(agent/api/server.py); a worker's pool processes inherit it from the worker's main process. It
installs the SDK only when spans have somewhere to go (OTEL_EXPORTER_OTLP_ENDPOINT, or an exporter
handed in by a test): otherwise nothing of the SDK is even imported, and the OpenTelemetry API used
in graphs/ stays a no-op.

What leaves the process carries no patient identifier: the spans of graphs/tracing.py hold ids of the
work only, and every span is redacted on its way out (agent/span_export.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agent.settings import Settings

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None


def otlp_traces_url(endpoint: str) -> str:
    """Where spans go for OTEL_EXPORTER_OTLP_ENDPOINT, as the OTLP specification derives it."""
    return endpoint.rstrip("/") + "/v1/traces"


def tracer_provider(settings: Settings, command: str, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """The SDK's provider: spans over OTLP/HTTP when `settings.otel_exporter_otlp_endpoint` is set, and to
    `exporter` when given (tests: an in-memory exporter), every span redacted first; None when neither.
    `command` (serve, worker, process...) becomes a resource attribute, to tell the API service's spans
    from a worker's."""
    if settings.otel_exporter_otlp_endpoint is None and exporter is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from agent.span_export import JobTraceIds, RedactingExporter

    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.otel_service_name, "imaging_agent.command": command}),
        id_generator=JobTraceIds(),
    )
    if settings.otel_exporter_otlp_endpoint is not None:
        url = otlp_traces_url(settings.otel_exporter_otlp_endpoint)
        provider.add_span_processor(BatchSpanProcessor(RedactingExporter(OTLPSpanExporter(endpoint=url))))
        log.info("traces go to %s", url)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(exporter)))
    return provider


def configure_tracing(settings: Settings, command: str, exporter: SpanExporter | None = None) -> bool:
    """Install `tracer_provider` for this process, once (later calls change nothing); whether spans are
    recorded. DICOMweb requests (requests, under dicomweb-client) are traced from here for the whole
    process; FHIR requests (httpx) through the transport `http_transport` gives the client where
    agent/parts.py builds it."""
    global _provider
    if _provider is not None:
        return True
    provider = tracer_provider(settings, command, exporter)
    if provider is None:
        return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    trace.set_tracer_provider(provider)
    RequestsInstrumentor().instrument()
    _provider = provider
    return True


def flush_traces() -> None:
    """Send the spans still buffered (a worker's pool process about to exit)."""
    if _provider is not None:
        _provider.force_flush()


def http_transport() -> httpx.BaseTransport | None:
    """The transport for the project's httpx clients: with tracing on, one client span per request
    under the current span; None (httpx's own) when tracing is off. Build clients after
    `configure_tracing`."""
    if _provider is None:
        return None
    import httpx
    from opentelemetry.instrumentation.httpx import SyncOpenTelemetryTransport

    return SyncOpenTelemetryTransport(httpx.HTTPTransport())
