"""The job queue of the producers (API, CLI, chat): `graphs.runtime.JobQueue` over Celery; and the
segmentation queue of the study workers (`tools.workflow.engine_jobs.SegmentationQueue`).

A message names the job and what starts it (a thread id, an ImagingStudy id, a work-list query of
codes and references, an engine name, a request file in the work store): no record, no patient data,
no array travels the broker."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from celery import Celery
from kombu.exceptions import ChannelError, OperationalError
from kombu.transport.base import StdChannel

from agent.workers.celery_app import QUEUES, RESUME, SEGMENT, START_BATCH, START_STUDY
from graphs.runtime import QueueUnavailableError


def send(app: Celery, name: str, args: list[object]) -> None:
    try:
        app.send_task(name, args=args)
    except OperationalError as exc:
        raise QueueUnavailableError(
            f"the broker did not take the job ({exc}); check that Redis runs at IMAGING_AGENT_BROKER_URL "
            "(`imaging-agent services status`), then start the job again"
        ) from exc


class CeleryJobQueue:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def start_study(self, thread_id: str, imaging_study_id: str, engine: str) -> None:
        send(self.app, START_STUDY, [thread_id, imaging_study_id, engine])

    def start_batch(self, thread_id: str, query: Mapping[str, str] | None, engine: str) -> None:
        send(self.app, START_BATCH, [thread_id, dict(query) if query else None, engine])

    def resume(self, thread_id: str) -> None:
        send(self.app, RESUME, [thread_id])

    def depth(self) -> dict[str, int]:
        """Messages waiting in each of the workers' queues (Redis lists; taken ones are not counted).
        Raises QueueUnavailableError when the broker cannot be reached."""
        try:
            with self.app.connection_for_read() as connection:
                connection.ensure_connection(max_retries=1)  # a scrape must not wait out a broker outage
                channel = connection.default_channel
                return {name: _waiting(channel, name) for name in QUEUES}
        except OperationalError as exc:
            raise QueueUnavailableError(f"the broker did not answer ({exc}); check IMAGING_AGENT_BROKER_URL") from exc


def _waiting(channel: StdChannel, queue: str) -> int:
    try:
        return channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError:  # no message was ever left in it: Redis has no such list
        return 0


class CelerySegmentationQueue:
    """A study job's segmentation request to the `engines` queue: the request file's path, nothing else."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def submit(self, thread_id: str, request_path: Path) -> None:
        send(self.app, SEGMENT, [thread_id, str(request_path)])
