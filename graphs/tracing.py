"""Spans of the workflow: one root span per run of a job (its start, each resume), one per step.

Written against the OpenTelemetry API only: without an SDK (no collector configured, agent/telemetry.py)
every span here is a no-op. Attributes carry identifiers of the work (job id, ImagingStudy id,
engine, step), never a patient's name, identifier or accession number; a failed step records its
error type, not its message, since messages for the radiologist name patients.

Every run of one job shares one trace id, derived from the job's thread id: the SDK's id generator
(agent/telemetry.py) reads it from the context `job_span` sets, so the run up to the approval and
the run after the decision (hours later, maybe on another worker) are one trace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import Span, Status, StatusCode

tracer = trace.get_tracer("imaging-agent")

# The trace id `job_span` asks for, read by the SDK's id generator when it starts the root span.
JOB_TRACE_ID = context.create_key("imaging-agent.job-trace-id")

JOB_ID = "imaging_agent.job.id"
JOB_KIND = "imaging_agent.job.kind"
JOB_RUN = "imaging_agent.job.run"
IMAGING_STUDY_ID = "imaging_agent.imaging_study.id"
ENGINE = "imaging_agent.engine"
STEP = "imaging_agent.step"
OUTCOME = "imaging_agent.outcome"


def job_trace_id(thread_id: str) -> int:
    """The trace id of every run of the job `thread_id` (128 bits, never zero)."""
    return int.from_bytes(hashlib.sha256(thread_id.encode()).digest()[:16], "big") or 1


def failed(span: Span, exc: BaseException) -> None:
    """Mark the span failed by the error's type only: messages can name the patient."""
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))


@contextmanager
def job_span(kind: str, thread_id: str, attributes: Mapping[str, str]) -> Iterator[Span]:
    """The root span of one run of a job, in the job's trace, even when started inside another span
    (a chat tool, a request): a job's trace is its own."""
    token = context.attach(context.set_value(JOB_TRACE_ID, job_trace_id(thread_id), context.Context()))
    try:
        with tracer.start_as_current_span(
            f"job {kind}",
            kind=trace.SpanKind.INTERNAL,
            attributes={JOB_ID: thread_id, JOB_KIND: kind, **attributes},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                failed(span, exc)
                raise
    finally:
        context.detach(token)


def step_attributes(stage: str, state: Mapping[str, Any], thread_id: str | None) -> dict[str, str]:
    attributes = {STEP: stage, IMAGING_STUDY_ID: state["imaging_study_id"]}
    if state.get("engine"):
        attributes[ENGINE] = state["engine"]
    if thread_id:
        attributes[JOB_ID] = thread_id
    return attributes


@contextmanager
def step_span(stage: str, state: Mapping[str, Any], thread_id: str | None) -> Iterator[Span]:
    """The span of one step of a study; the caller marks failures (`failed`), since the study graph
    turns a step's error into a state, not an exception."""
    with tracer.start_as_current_span(
        f"step {stage}",
        attributes=step_attributes(stage, state, thread_id),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span
