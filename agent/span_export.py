"""What the SDK does to spans on their way out of the process (agent/telemetry.py installs it).

Every span passes `redacted` before an exporter sees it: query strings leave HTTP URLs (FHIR searches
and QIDO filters can hold patient names and MRNs), exception messages and stack traces leave error
events and statuses (they can name the patient); an error's type stays. `JobTraceIds` gives all runs
of one job one trace (graphs/tracing.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import context
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Status

from graphs.tracing import JOB_TRACE_ID
from tools.http.retry import without_query

# Span attributes that may hold a URL: http.url / url.full (the two semantic-convention generations)
# keep their path, lose the query; url.query goes.
_URL_ATTRIBUTES = ("http.url", "url.full", "http.target")
_DROPPED_ATTRIBUTES = ("url.query",)
_EXCEPTION_KEPT = ("exception.type", "exception.escaped")


class JobTraceIds(RandomIdGenerator):
    """Random ids, except a job's root span, whose trace id `graphs.tracing.job_span` chose: every run
    of one job (its start, each resume) lands in one trace."""

    def generate_trace_id(self) -> int:
        wanted = context.get_value(JOB_TRACE_ID)
        return wanted if isinstance(wanted, int) else super().generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return False


def redacted(span: ReadableSpan) -> ReadableSpan:
    """The span without what could name a patient: URL query strings, exception messages and stack traces."""
    attributes = {
        key: without_query(value) if key in _URL_ATTRIBUTES and isinstance(value, str) else value
        for key, value in (span.attributes or {}).items()
        if key not in _DROPPED_ATTRIBUTES
    }
    events = [
        Event(
            event.name,
            {k: v for k, v in (event.attributes or {}).items() if event.name != "exception" or k in _EXCEPTION_KEPT},
            event.timestamp,
        )
        for event in span.events
    ]
    # A status description is the exception's text when the SDK set it; the type is in error.type.
    status = Status(span.status.status_code)
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingExporter(SpanExporter):
    """Hands `redacted` spans to the real exporter."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([redacted(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
