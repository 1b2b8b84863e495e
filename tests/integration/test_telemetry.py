"""Telemetry of one study job through the real services: its spans, read back with the SDK's in-memory
exporter, and the API service's /metrics, scraped over HTTP and parsed as Prometheus reads it.

The service runs in this process (uvicorn on a thread), so the job its JobRunner runs records its
spans here and counts in this process's metrics. The job asks for monai-bundle, which has no bundle
configured, so the engine error and the fallback to lung-threshold are real.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from agent.api.app import create_app
from agent.identity import account_store
from agent.settings import Settings
from agent.telemetry import configure_tracing
from graphs.tracing import IMAGING_STUDY_ID, JOB_ID, job_trace_id
from tests.conftest import free_port
from tests.integration.worker_processes import Worker
from tests.integration.workflow_helpers import SeededStudy, phantom_spec, result_instances, seed_phantom
from tests.uvicorn_thread import serving

pytestmark = pytest.mark.integration

PATIENT_ID = "TEL-0913"
PATIENT_NAME = "Spanwatcher^Quintessa"
SCRAPE_TOKEN = "scrape-token-for-the-test"
RADIOLOGIST, PASSWORD = "dr-telemetry", "telemetry pass 1"
STEPS = ["start", "fetch", "assemble", "preflight", "segment", "build", "approval", "write_pacs", "write_fhir"]


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """The SDK installed for this process, with an in-memory exporter behind the redaction."""
    exporter = InMemorySpanExporter()
    assert configure_tracing(Settings(_env_file=None), "test", exporter=exporter)
    yield exporter
    # Later tests in this process keep the provider, but nothing records into this exporter any more.
    RequestsInstrumentor().uninstrument()
    trace.get_tracer_provider().shutdown()  # type: ignore[attr-defined]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return _samples(response.text)


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _bearer(client: httpx.Client) -> dict[str, str]:
    response = client.post("/api/v1/auth/token", data={"username": RADIOLOGIST, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _wait(client: httpx.Client, headers: dict[str, str], job_id: str, pending: bool) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        assert not job["error"], job["error"]
        report = job["report"]
        if report and (report["pending"] if pending else report["done"]):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not {'reach its approval' if pending else 'finish'} in 300 s")


def _run_one_job(client: httpx.Client, study: SeededStudy) -> str:
    headers = _bearer(client)
    started = client.post(
        "/api/v1/jobs", json={"kind": "study", "imaging_study_id": study.imaging_study_id, "engine": "monai-bundle"},
        headers=headers,
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    [pending] = _wait(client, headers, job_id, pending=True)["report"]["pending"]
    decided = client.post(
        f"/api/v1/approvals/{pending['interrupt_id']}/decision", json={"decision": "approve"}, headers=headers
    )
    assert decided.status_code == 200, decided.text
    _wait(client, headers, job_id, pending=False)
    return job_id


def _texts(span: ReadableSpan) -> list[str]:
    """Everything a span carries that a collector would store, as text."""
    texts = [span.name, span.status.description or ""]
    texts += [f"{k}={v}" for k, v in (span.attributes or {}).items()]
    texts += [f"{k}={v}" for k, v in span.resource.attributes.items()]
    for event in span.events:
        texts += [event.name, *(f"{k}={v}" for k, v in (event.attributes or {}).items())]
    return texts


def test_one_job_traced_and_counted(
    spans: InMemorySpanExporter, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    settings = live_settings.model_copy(update={
        "run_dir": tmp_path / "run",
        "metrics_token": SecretStr(SCRAPE_TOKEN),
        "fallback_engines": ["lung-threshold"],
    })
    with account_store(settings) as accounts:
        accounts.add(RADIOLOGIST, PASSWORD, ["radiologist"], "Dr. Telemetry")
    study = seed_phantom(settings, tmp_path / "phantom", phantom_spec(913, PATIENT_ID, patient_name=PATIENT_NAME))
    seeded.append(study)
    with serving(create_app(settings), free_port()) as url, httpx.Client(base_url=url, timeout=120) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        before = _scrape(client)
        job_id = _run_one_job(client, study)
        after = _scrape(client)
    written = result_instances(settings, study.study_instance_uid)
    assert {modality: len(uids) for modality, uids in written.items()} == {"RTSTRUCT": 1, "SEG": 1, "SR": 1}

    # -- spans: the job's trace ----------------------------------------------------------------
    finished = spans.get_finished_spans()
    trace_id = job_trace_id(job_id)
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    roots = [s for s in in_trace if s.parent is None]
    # Two runs, one trace: up to the approval, and the decision's run that writes.
    assert [r.name for r in roots] == ["job study", "job study"]
    assert [r.attributes[JOB_ID] for r in roots] == [job_id, job_id]
    assert [r.attributes["imaging_agent.job.run"] for r in roots] == ["start", "resume"]
    assert all(r.attributes[IMAGING_STUDY_ID] == study.imaging_study_id for r in roots)
    assert all(r.attributes["imaging_agent.engine"] == "monai-bundle" for r in roots)
    root_ids = {r.context.span_id for r in roots}

    steps = {s.context.span_id: s for s in in_trace if s.name.startswith("step ")}
    assert all(s.parent is not None and s.parent.span_id in root_ids for s in steps.values())
    assert {s.attributes["imaging_agent.step"] for s in steps.values()} == set(STEPS)
    assert all(s.attributes[IMAGING_STUDY_ID] == study.imaging_study_id for s in steps.values())
    # The approval step ran twice: waiting at the interrupt, then with the decision.
    approval = [s for s in steps.values() if s.name == "step approval"]
    assert [s.attributes.get("imaging_agent.outcome") for s in approval] == ["waiting", None]

    clients = [s for s in in_trace if s.kind == SpanKind.CLIENT]
    scopes = {s.instrumentation_scope.name for s in clients}
    assert {"opentelemetry.instrumentation.httpx", "opentelemetry.instrumentation.requests"} <= scopes
    assert all(s.parent is not None and s.parent.span_id in steps for s in clients)
    fhir_urls = {s.attributes["http.url"] for s in clients if "httpx" in s.instrumentation_scope.name}
    assert any(u.startswith(settings.fhir_url) for u in fhir_urls) and not any("?" in u for u in fhir_urls)
    fetch = next(s for s in steps.values() if s.name == "step fetch")
    assert any(s.parent.span_id == fetch.context.span_id for s in clients if s.parent)  # WADO-RS under fetch

    # No patient name or identifier anywhere, in any span this process recorded (seeding included).
    leaked = [t for s in finished for t in _texts(s) if PATIENT_ID in t or "Spanwatcher" in t or "Quintessa" in t]
    assert leaked == []

    # -- metrics: a real scrape, before and after ----------------------------------------------
    assert _value(after, "imaging_agent_jobs", state="done") == 1
    for step in STEPS:
        grew = _value(after, "imaging_agent_step_duration_seconds_count", step=step) - _value(
            before, "imaging_agent_step_duration_seconds_count", step=step
        )
        assert grew >= 1, step
    assert _value(after, "imaging_agent_approval_wait_seconds_count") - _value(
        before, "imaging_agent_approval_wait_seconds_count"
    ) == 1
    assert _value(after, "imaging_agent_engine_errors_total", engine="monai-bundle") - _value(
        before, "imaging_agent_engine_errors_total", engine="monai-bundle"
    ) == 1
    # RTSTRUCT, SEG and SR into the PACS; one write-back transaction into FHIR.
    assert _value(after, "imaging_agent_writes_total", target="pacs") - _value(
        before, "imaging_agent_writes_total", target="pacs"
    ) == 3
    assert _value(after, "imaging_agent_writes_total", target="fhir") - _value(
        before, "imaging_agent_writes_total", target="fhir"
    ) == 1
    assert not any(PATIENT_ID in name or PATIENT_ID in str(labels) for name, labels in after)


@pytest.mark.workers
def test_queue_depth_and_a_workers_own_metrics(
    live_settings: Settings, redis_broker: str, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """With workers: a queued job is a message waiting in Redis (the API's /metrics), and the steps a
    worker's pool process ran count on the worker's own /metrics (`--metrics-port`)."""
    broker = f"{redis_broker.rsplit('/', 1)[0]}/15"  # a Redis database no worker test uses
    settings = live_settings.model_copy(update={"run_dir": tmp_path / "run", "broker_url": SecretStr(broker)})
    with account_store(settings) as accounts:
        accounts.add(RADIOLOGIST, PASSWORD, ["radiologist"], "Dr. Telemetry")
    study = seed_phantom(settings, tmp_path / "phantom", phantom_spec(914, "TEL-0914", patient_name=PATIENT_NAME))
    seeded.append(study)
    worker_port = free_port()
    with serving(create_app(settings), free_port()) as url, httpx.Client(base_url=url, timeout=120) as client:
        empty = _samples(client.get("/metrics").text)  # no token configured: open
        assert _value(empty, "imaging_agent_queue_depth", queue="studies") == 0
        headers = _bearer(client)
        body = {"kind": "study", "imaging_study_id": study.imaging_study_id}
        queued = client.post("/api/v1/jobs", json=body, headers=headers)
        assert queued.status_code == 202, queued.text
        waiting = _samples(client.get("/metrics").text)
        assert _value(waiting, "imaging_agent_queue_depth", queue="studies") == 1
        assert _value(waiting, "imaging_agent_queue_depth", queue="engines") == 0
        assert _value(waiting, "imaging_agent_jobs", state="queued") == 1

        worker = Worker("telemetry", settings, tmp_path / "logs", options=["--metrics-port", str(worker_port)])
        try:
            worker.wait_ready()
            _wait(client, headers, queued.json()["job_id"], pending=True)
            taken = _samples(client.get("/metrics").text)
            scraped = httpx.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=30)
        finally:
            worker.stop()
    assert _value(taken, "imaging_agent_queue_depth", queue="studies") == 0
    assert _value(taken, "imaging_agent_jobs", state="waiting-approval") == 1
    assert scraped.status_code == 200
    on_worker = _samples(scraped.text)
    for step in STEPS[: STEPS.index("build") + 1]:  # up to the approval card; the pool process ran them once
        assert _value(on_worker, "imaging_agent_step_duration_seconds_count", step=step) == 1, step
    assert "TEL-0914" not in scraped.text and "Spanwatcher" not in scraped.text
