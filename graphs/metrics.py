"""Prometheus figures the study pipeline observes where it runs (the API service's /metrics shows
them, agent/api/metrics.py). Labels are step, engine and target names only: never a patient, a
study or a job id, which would also make a series per study.

In-process figures: a job run by a Celery worker counts in that worker's process (README, "Telemetry").
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

STEP_SECONDS = Histogram(
    "imaging_agent_step_duration_seconds",
    "How long each step of a study took (failed steps included; the wait for approval is not a step's time).",
    ["step"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
APPROVAL_WAIT_SECONDS = Histogram(
    "imaging_agent_approval_wait_seconds",
    "From the approval card (results built) to the radiologist's decision.",
    buckets=(1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 8 * 3600, 24 * 3600, 72 * 3600),
)
ENGINE_ERRORS = Counter(
    "imaging_agent_engine_errors",
    "Segmentation engines that raised an error for a study (a fallback engine may have taken over).",
    ["engine"],
)
WRITES = Counter(
    "imaging_agent_writes",
    "Approved writes: DICOM objects newly stored in the PACS (pacs), write-back transactions in FHIR (fhir).",
    ["target"],
)
