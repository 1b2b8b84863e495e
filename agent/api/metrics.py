"""GET /metrics of the API service: Prometheus's text format.

Read at scrape time: jobs by state (the state database, so every worker's jobs count) and, with
workers, the messages waiting in each queue (the broker). Observed where jobs run (graphs/metrics.py):
step durations, approval wait, engine errors, writes; with Celery workers those live in the
workers' processes and are not gathered here (README, "Telemetry"). Without workers a job starts on
a thread of the service as it arrives: there is no queue, and no queue figure.

No patient data in any name or label: states, queue names, steps, engines, targets. The endpoint needs
`Authorization: Bearer IMAGING_AGENT_METRICS_TOKEN` when that is set, else it is open like /health.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import SecretStr

from graphs.runtime import QueueUnavailableError, WorkflowRuntime

log = logging.getLogger(__name__)

# Every status a job row can have (tools/workflow/jobs.py), so a dashboard sees zeros, not gaps.
JOB_STATES = ("queued", "running", "waiting-approval", "done", "dispatched", "cancelled")

_bearer = HTTPBearer(auto_error=False)


class _ProcessMetrics(Collector):
    """This process's own figures (the pipeline's, Python's, the process's), from the default registry."""

    def collect(self) -> Iterable[Metric]:
        yield from REGISTRY.collect()


class _JobStates(Collector):
    def __init__(self, runtime: WorkflowRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterable[Metric]:
        counts = self.runtime.job_counts()
        family = GaugeMetricFamily("imaging_agent_jobs", "Jobs in the state database, by state.", labels=["state"])
        for state in sorted({*JOB_STATES, *counts}):
            family.add_metric([state], counts.get(state, 0))
        yield family


class _QueueDepth(Collector):
    def __init__(self, runtime: WorkflowRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterable[Metric]:
        if self.runtime.queue is None:
            return
        try:
            depth = self.runtime.queue.depth()
        except QueueUnavailableError as exc:  # the other figures still count; the broker's absence is logged
            log.warning("metrics: no queue depth: %s", exc)
            return
        family = GaugeMetricFamily(
            "imaging_agent_queue_depth", "Messages waiting for a worker, by queue.", labels=["queue"]
        )
        for queue, waiting in sorted(depth.items()):
            family.add_metric([queue], waiting)
        yield family


def metrics_registry(runtime: WorkflowRuntime) -> CollectorRegistry:
    """The service's figures: the process's own, and those read from the database and the broker."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (_ProcessMetrics(), _JobStates(runtime), _QueueDepth(runtime)):
        registry.register(collector)
    return registry


def metrics_router(token: SecretStr | None) -> APIRouter:
    """/metrics, reading `request.app.state.metrics` (built in the service's lifespan)."""

    def scraper(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="/metrics needs the scrape token: send Authorization: Bearer IMAGING_AGENT_METRICS_TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter()

    @router.get("/metrics", tags=["service"], dependencies=[Depends(scraper)], response_class=Response)
    def metrics(request: Request) -> Response:
        """Prometheus metrics: jobs by state, queue depth, step durations, approval wait, engine errors, writes."""
        return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)

    return router
