"""What leaves the process in a span: no query string, no exception text; one trace per job."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from agent.settings import Settings
from agent.span_export import JobTraceIds, RedactingExporter
from agent.telemetry import tracer_provider
from graphs.tracing import JOB_TRACE_ID, job_trace_id

pytestmark = pytest.mark.unit


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(id_generator=JobTraceIds())
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(memory)))
    return provider, memory


def test_query_strings_and_exception_text_never_leave() -> None:
    provider, memory = _provider()
    tracer = provider.get_tracer("test")
    url = "http://pacs.example/dicom-web/studies?PatientName=Doe%5EJane&PatientID=MRN-77"
    with tracer.start_as_current_span("GET", attributes={"http.url": url, "url.full": url, "url.query": "PatientID=MRN-77"}):
        pass
    with pytest.raises(ValueError), tracer.start_as_current_span("step fetch"):
        raise ValueError("DICOM PatientID MRN-77 (Doe^Jane) is not the FHIR patient's")
    with tracer.start_as_current_span("step build") as span:
        span.set_status(Status(StatusCode.ERROR, "Doe^Jane: no lungs"))

    get, fetch, build = memory.get_finished_spans()
    assert get.attributes == {"http.url": url.split("?")[0], "url.full": url.split("?")[0]}
    [event] = fetch.events
    assert event.name == "exception" and dict(event.attributes) == {"exception.type": "ValueError", "exception.escaped": "False"}
    assert fetch.status.status_code == StatusCode.ERROR and fetch.status.description is None
    assert build.status.status_code == StatusCode.ERROR and build.status.description is None


def test_every_run_of_a_job_is_one_trace() -> None:
    provider, memory = _provider()
    tracer = provider.get_tracer("test")
    for _run in range(2):
        token = context.attach(context.set_value(JOB_TRACE_ID, job_trace_id("study-1"), context.Context()))
        try:
            with tracer.start_as_current_span("job study"):
                pass
        finally:
            context.detach(token)
    with tracer.start_as_current_span("elsewhere"):
        pass
    first, second, other = memory.get_finished_spans()
    assert first.context.trace_id == second.context.trace_id == job_trace_id("study-1")
    assert first.context.span_id != second.context.span_id
    assert other.context.trace_id != job_trace_id("study-1")
    assert job_trace_id("study-2") != job_trace_id("study-1")


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: keeps each request's path and decoded body."""

    received: list[tuple[str, ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:  # noqa: N802 (the http.server name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append((self.path, ExportTraceServiceRequest.FromString(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(ExportTraceServiceResponse().SerializeToString())

    def log_message(self, *args: object) -> None:
        pass


def test_spans_go_over_otlp_http_to_the_configured_endpoint() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
        settings = Settings(_env_file=None).model_copy(
            update={"otel_exporter_otlp_endpoint": endpoint, "otel_service_name": "imaging-agent-test"}
        )
        provider = tracer_provider(settings, "worker")
        assert provider is not None
        with provider.get_tracer("test").start_as_current_span(
            "GET", attributes={"http.url": "http://fhir.example/fhir/Patient?identifier=urn:x%7CMRN-77"}
        ):
            pass
        assert provider.force_flush()
        provider.shutdown()
    finally:
        server.shutdown()
    [(path, request)] = _Collector.received
    assert path == "/v1/traces"
    [resource_spans] = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "imaging-agent-test" and resource["imaging_agent.command"] == "worker"
    [span] = resource_spans.scope_spans[0].spans
    assert {a.key: a.value.string_value for a in span.attributes} == {"http.url": "http://fhir.example/fhir/Patient"}


def test_no_endpoint_no_sdk() -> None:
    assert tracer_provider(Settings(_env_file=None).model_copy(update={"otel_exporter_otlp_endpoint": None}), "serve") is None
