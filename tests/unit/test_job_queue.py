"""Jobs on a queue (graphs/runtime.py with a JobQueue; agent/workers/): what producers send, and how a
worker runs a message that may come twice, early, or while another runner holds the job.

The fake workflow of the lease tests over a real database (SQLite and PostgreSQL); the queue records
its messages instead of sending them, and a second runtime over the same database plays the worker.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import Engine

from agent.settings import Settings
from agent.workers.celery_app import RESUME, START_BATCH, START_STUDY, build_celery_app
from agent.workers.queue import CeleryJobQueue
from graphs.runtime import JobNotStartedError, QueueUnavailableError, WorkflowRuntime, study_job_of
from tests.unit.test_runtime_leases import LeasedFake, _held_by
from tests.unit.test_study_routing import _decision
from tools.workflow.decisions import DecisionStore
from tools.workflow.leases import JobBusyError

pytestmark = pytest.mark.unit

ENGINE = "lung-threshold"
PREPARE = ["read_study", "open_task", "fetch", "assemble", "preflight", "segment", "build"]


class RecordingQueue:
    def __init__(self, refuse: bool = False) -> None:
        self.sent: list[tuple[object, ...]] = []
        self.refuse = refuse

    def _send(self, *message: object) -> None:
        if self.refuse:
            raise QueueUnavailableError("the broker is down (test)")
        self.sent.append(message)

    def start_study(self, thread_id: str, imaging_study_id: str, engine: str) -> None:
        self._send("start_study", thread_id, imaging_study_id, engine)

    def start_batch(self, thread_id: str, query: Mapping[str, str] | None, engine: str) -> None:
        self._send("start_batch", thread_id, query, engine)

    def resume(self, thread_id: str) -> None:
        self._send("resume", thread_id)


@pytest.fixture()
def fake(database: Engine) -> LeasedFake:
    return LeasedFake(DecisionStore(database))


def _runtime(fake: LeasedFake, database: Engine, queue: RecordingQueue | None) -> WorkflowRuntime:
    return WorkflowRuntime(fake, engine=database, batch_concurrency=2, queue=queue)  # type: ignore[arg-type]


def _writes(fake: LeasedFake) -> list[str]:
    """The write steps run so far (one study per test; `store` is keyed by its Study Instance UID)."""
    return [step for step, _key in fake.calls if step in ("record_approval", "store", "report")]


def test_a_queued_study_runs_on_the_worker_and_its_decision_queues_the_resume(fake: LeasedFake, database: Engine) -> None:
    queue = RecordingQueue()
    with _runtime(fake, database, queue) as producer, _runtime(fake, database, queue) as worker:
        started = producer.start_study("s-1")
        assert started.queued and not started.done and not started.pending
        assert producer.job(started.thread_id).status == "queued" and fake.calls == []
        assert queue.sent == [("start_study", started.thread_id, "s-1", ENGINE)]

        waiting = worker.run_queued(started.thread_id, {"imaging_study_id": "s-1", "engine": ENGINE})
        [pending] = waiting.pending
        assert fake.steps("s-1") == PREPARE

        decided = producer.decide(started.thread_id, {pending.interrupt_id: _decision()})
        assert decided.queued and not decided.pending and _writes(fake) == []
        assert queue.sent[-1] == ("resume", started.thread_id)

        done = worker.run_queued(started.thread_id, None)
    assert done.done and [o["outcome"] for o in done.outcomes] == ["completed"]
    assert _writes(fake) == ["record_approval", "store", "report"]


def test_a_message_delivered_again_continues_the_job_and_never_starts_it_over(fake: LeasedFake, database: Engine) -> None:
    queue = RecordingQueue()
    initial = {"imaging_study_id": "s-1", "engine": ENGINE}
    with _runtime(fake, database, queue) as producer, _runtime(fake, database, queue) as worker:
        thread_id = producer.start_study("s-1").thread_id
        [pending] = worker.run_queued(thread_id, initial).pending
        again = worker.run_queued(thread_id, initial)  # the start message once more: the approval is asked again
        assert [p.interrupt_id for p in again.pending] == [pending.interrupt_id]
        assert fake.steps("s-1") == PREPARE
        producer.decide(thread_id, {pending.interrupt_id: _decision()})
        worker.run_queued(thread_id, None)
        for message in (initial, None):  # copies after the end change nothing
            assert worker.run_queued(thread_id, message).done
    assert fake.steps("s-1").count("segment") == 1 and _writes(fake) == ["record_approval", "store", "report"]


def test_a_cancelled_job_leaves_the_worklist_and_its_late_messages_are_dropped(fake: LeasedFake, database: Engine) -> None:
    queue = RecordingQueue()
    initial = {"imaging_study_id": "s-1", "engine": ENGINE}
    with _runtime(fake, database, queue) as producer, _runtime(fake, database, queue) as worker:
        thread_id = producer.start_study("s-1").thread_id
        [pending] = worker.run_queued(thread_id, initial).pending
        [withdrawn] = producer.cancel(thread_id, "test")
        assert withdrawn.interrupt_id == pending.interrupt_id
        assert producer.job(thread_id).status == "cancelled" and producer.pending_approvals() == []
        assert ("record_cancellation", "s-1") in fake.calls
        for message in (initial, None):  # a redelivered start, an engine worker's resume: nothing runs
            assert worker.run_queued(thread_id, message).done
        with pytest.raises(KeyError, match="no pending approval"):
            producer.decide(thread_id, {pending.interrupt_id: _decision()})
        with pytest.raises(ValueError, match="was cancelled"):
            producer.resume(thread_id)
        with pytest.raises(ValueError, match="only a job that waits"):
            producer.cancel(thread_id, "again")
    assert fake.steps("s-1") == [*PREPARE, "record_cancellation"] and _writes(fake) == []


def test_a_resume_that_overtakes_the_start_leaves_the_job_to_its_start(fake: LeasedFake, database: Engine) -> None:
    with _runtime(fake, database, RecordingQueue()) as runtime:
        thread_id = runtime.start_study("s-1").thread_id
        with pytest.raises(JobNotStartedError, match="has not started yet"):
            runtime.run_queued(thread_id, None)
        assert runtime.runner(thread_id) is None  # the lease is not kept
        assert runtime.run_queued(thread_id, {"imaging_study_id": "s-1", "engine": ENGINE}).pending


def test_a_copy_for_a_job_a_live_runner_holds_is_refused(fake: LeasedFake, database: Engine) -> None:
    with subprocess.Popen(["sleep", "60"]) as other, _runtime(fake, database, RecordingQueue()) as runtime:
        thread_id = runtime.start_study("s-1").thread_id
        _held_by(database, other.pid, thread_id)
        try:
            with pytest.raises(JobBusyError, match=f"pid {other.pid}"):
                runtime.run_queued(thread_id, {"imaging_study_id": "s-1", "engine": ENGINE})
        finally:
            other.kill()
    assert fake.calls == []


def test_a_batch_is_dispatched_as_one_study_job_per_study_once(fake: LeasedFake, database: Engine) -> None:
    queue = RecordingQueue()
    with _runtime(fake, database, queue) as producer, _runtime(fake, database, queue) as worker:
        batch = producer.start_batch({"status": "registered"}).thread_id
        assert queue.sent == [("start_batch", batch, {"status": "registered"}, ENGINE)]
        children = worker.dispatch_batch(batch, {"status": "registered"}, ENGINE)
        assert children == [study_job_of(batch, "s-1"), study_job_of(batch, "s-2")]
        assert worker.dispatch_batch(batch, {"status": "registered"}, ENGINE) == children  # delivered again: sends nothing
        assert len(producer.jobs()) == 3 and producer.job(batch).status == "dispatched"
        assert [m for m in queue.sent if m[0] == "start_study"] == [
            ("start_study", child, sid, ENGINE) for child, sid in zip(children, ("s-1", "s-2"))
        ]
        assert not producer.report(batch).done
        for child, sid in zip(children, ("s-1", "s-2")):
            worker.run_queued(child, {"imaging_study_id": sid, "engine": ENGINE})
        pending = producer.report(batch).pending
        assert sorted(p.request.imaging_study_id for p in pending) == ["s-1", "s-2"]
        assert [j.thread_id for j in producer.jobs(unfinished_only=True)] == children
        for p in pending:
            producer.decide(p.thread_id, {p.interrupt_id: _decision()})
            worker.run_queued(p.thread_id, None)
        final = producer.report(batch)
    assert final.done and final.summary == {"studies": 2, "completed": 2}


class FailingOnce(RecordingQueue):
    """Refuses the second study's start once, as a worker dying mid-dispatch would leave it."""

    def start_study(self, thread_id: str, imaging_study_id: str, engine: str) -> None:
        if imaging_study_id == "s-2" and not any(m[0] == "refused" for m in self.sent):
            self.sent.append(("refused", thread_id))
            raise QueueUnavailableError("the broker went away (test)")
        super().start_study(thread_id, imaging_study_id, engine)


def test_a_dispatch_cut_short_and_delivered_again_adds_no_job_twice(fake: LeasedFake, database: Engine) -> None:
    queue = FailingOnce()
    with _runtime(fake, database, queue) as runtime:
        batch = runtime.start_batch(None).thread_id
        with pytest.raises(QueueUnavailableError):
            runtime.dispatch_batch(batch, None, ENGINE)
        assert runtime.job(batch).status == "queued" and runtime.runner(batch) is None
        children = runtime.dispatch_batch(batch, None, ENGINE)
        assert sorted(j.thread_id for j in runtime.jobs() if j.kind == "study") == sorted(children)
        assert runtime.job(batch).status == "dispatched"
    sent = [m[2] for m in queue.sent if m[0] == "start_study"]
    assert sent == ["s-1", "s-1", "s-2"]  # s-1 again (its start, if it ran, continues and does nothing new)


def test_a_job_the_broker_refuses_is_not_left_behind(fake: LeasedFake, database: Engine) -> None:
    with _runtime(fake, database, RecordingQueue(refuse=True)) as runtime:
        with pytest.raises(QueueUnavailableError, match="broker is down"):
            runtime.start_study("s-1")
        assert runtime.jobs() == []


def test_the_celery_app_acks_late_prefetches_nothing_and_speaks_json_only() -> None:
    settings = Settings(
        broker_url=SecretStr("redis://:pw@127.0.0.1:6380/0"), broker_visibility_timeout_s=42, _env_file=None
    )
    app = build_celery_app(settings)
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_disable_prefetch
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.broker_transport_options["visibility_timeout"] == 42
    assert conf.broker_transport_options["unacked_restore_interval"] <= 42
    assert {conf.task_routes[name]["queue"] for name in (START_STUDY, START_BATCH, RESUME)} == {"studies"}


def test_a_message_is_ids_and_names_only(monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_celery_app(Settings(broker_url=SecretStr("redis://127.0.0.1:6380/0"), _env_file=None))
    sent: list[tuple[str, list[object]]] = []
    monkeypatch.setattr(app, "send_task", lambda name, args: sent.append((name, args)))
    queue = CeleryJobQueue(app)
    queue.start_study("study-1", "img-1", ENGINE)
    queue.start_batch("batch-1", {"status": "registered", "subject": "Patient/p-1"}, ENGINE)
    queue.resume("study-1")
    assert [name for name, _ in sent] == [START_STUDY, START_BATCH, RESUME]
    assert all(len(json.dumps(args)) < 200 for _, args in sent)


def test_the_broker_must_be_redis_and_the_work_store_defaults_to_the_run_dir(tmp_path: object) -> None:
    with pytest.raises(ValidationError, match="IMAGING_AGENT_BROKER_URL must be a Redis URL"):
        Settings(broker_url=SecretStr("amqp://guest@127.0.0.1//"), _env_file=None)
    settings = Settings(run_dir=tmp_path, _env_file=None)  # type: ignore[arg-type]
    assert settings.work_root == settings.run_dir / "work"
    shared = Settings(run_dir=tmp_path, work_dir="/mnt/work-store", _env_file=None)  # type: ignore[arg-type]
    assert str(shared.work_root) == "/mnt/work-store"


def test_a_study_waiting_for_its_engine_frees_the_worker_and_its_resume_goes_on_from_segment(
    database: Engine,
) -> None:
    fake = LeasedFake(DecisionStore(database), on_engines=["s-1"])
    queue = RecordingQueue()
    with _runtime(fake, database, queue) as producer, _runtime(fake, database, queue) as worker:
        thread_id = producer.start_study("s-1").thread_id
        waiting = worker.run_queued(thread_id, {"imaging_study_id": "s-1", "engine": ENGINE})
        assert waiting.waiting_engine and not waiting.done and not waiting.pending
        # Not a failure: no Task marked failed, the lease let go, the job marked as waiting for its engine.
        assert "record_failure" not in fake.steps("s-1") and worker.runner(thread_id) is None
        assert worker.job(thread_id).status == "waiting-engine"

        resumed = worker.run_queued(thread_id, None)  # the engine worker's resume
        [pending] = resumed.pending
        producer.decide(thread_id, {pending.interrupt_id: _decision()})
        done = worker.run_queued(thread_id, None)
    assert done.done and [o["outcome"] for o in done.outcomes] == ["completed"]
    # Nothing before segment ran twice: the resume went on from segment's checkpoint.
    assert fake.steps("s-1")[: len(PREPARE) + 1] == [*PREPARE[:-1], "segment", "build"]
    assert _writes(fake) == ["record_approval", "store", "report"]
