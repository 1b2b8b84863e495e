"""The Celery app, built once from the settings by whoever talks to the broker (producers and workers).

What makes a killed worker lose nothing (docs/architecture.md, "Workers"):
- `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged only when its task has
  returned; a pool process that dies mid-task gives its message back at once;
- a whole worker (a machine) that dies leaves its message unacknowledged in Redis, which hands it to
  another worker once it is older than `broker_visibility_timeout_s`; the sweep that does so runs
  every few seconds, not kombu's default of 100 s, so a short timeout takes effect;
- prefetch off (multiplier 1, `worker_disable_prefetch`): a busy worker holds no second message, so a
  study or an approval's resume goes to whichever worker is free;
- JSON only: a message is ids and names (tasks.py), never a pickled object, a record or an array.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from agent.settings import Settings

START_STUDY = "imaging_agent.start_study"
START_BATCH = "imaging_agent.start_batch"
RESUME = "imaging_agent.resume"
SEGMENT = "imaging_agent.segment"
# Job tasks (fetch, build, write-back) go to `studies`; a job's segmentation, when IMAGING_AGENT_ENGINE_QUEUE
# is "engines", to `engines`, which the machines with the engines (GPUs) take.
STUDIES_QUEUE = "studies"
ENGINES_QUEUE = "engines"
QUEUES = (STUDIES_QUEUE, ENGINES_QUEUE)


class BrokerNotConfiguredError(RuntimeError):
    """No broker URL: there are no workers to hand jobs to."""


def build_celery_app(settings: Settings) -> Celery:
    if settings.broker_url is None:
        raise BrokerNotConfiguredError(
            "IMAGING_AGENT_BROKER_URL is not set: workers need the Redis broker (redis://:PASSWORD@HOST:PORT/0; "
            "`imaging-agent services up --scale` starts one and writes its URL to run/redis/broker-url)"
        )
    visibility = settings.broker_visibility_timeout_s
    app = Celery("imaging_agent", broker=settings.broker_url.get_secret_value(), set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        # Where a job stands is in the state database (jobs, checkpoints); Celery keeps no results.
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=STUDIES_QUEUE,
        task_routes={
            **{name: {"queue": STUDIES_QUEUE} for name in (START_STUDY, START_BATCH, RESUME)},
            SEGMENT: {"queue": ENGINES_QUEUE},
        },
        broker_transport_options={
            "visibility_timeout": visibility,
            "unacked_restore_interval": max(1, min(10, int(visibility / 4))),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        # Remote control and events are for Flower and `celery inspect`; the jobs table is the record here.
        worker_enable_remote_control=False,
        worker_send_task_events=False,
    )
    return app


__all__ = [
    "ENGINES_QUEUE",
    "QUEUES",
    "RESUME",
    "SEGMENT",
    "START_BATCH",
    "START_STUDY",
    "STUDIES_QUEUE",
    "BrokerNotConfiguredError",
    "build_celery_app",
]
