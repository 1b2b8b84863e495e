"""Workers on Celery + Redis, as two machines: `imaging-agent worker` processes with run directories of
their own, sharing the session's PostgreSQL, Redis, Orthanc and FHIR server and one work store.

Jobs and decisions are given through the runtime as the API, the CLI and the chat give them with a
broker set (`AgentRuntime` queues them); which worker ran which stage is read from the workers' logs.
"""

from __future__ import annotations

import itertools
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from agent.runtime import AgentRuntime
from agent.services.postgres import PostgresCluster
from agent.settings import Settings
from tests.conftest import free_port
from tests.integration.worker_processes import CLI, Worker, running_workers, settings_env, wait_until
from tests.integration.workflow_helpers import (
    SeededStudy,
    approve,
    assert_nothing_written,
    assert_written_once,
    phantom_spec,
    seed_phantom,
    worklist_of,
)
from tests.state_databases import fresh_database
from tools.workflow.engine_jobs import EngineResult, request_folder

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.workers]

_seeds = itertools.count(5201)
# Each test's messages in a Redis database of its own: nothing one test queued reaches another's workers.
_redis_databases = itertools.count(1)


@pytest.fixture()
def visibility_s() -> float:
    """The broker's visibility timeout: long unless a test kills a worker and waits for redelivery."""
    return 120.0


@pytest.fixture()
def scale_settings(
    settings: Settings, postgres_cluster: PostgresCluster, redis_broker: str, visibility_s: float, tmp_path: Path
) -> Iterator[Settings]:
    broker = f"{redis_broker.rsplit('/', 1)[0]}/{next(_redis_databases) % 16}"
    with fresh_database(postgres_cluster) as database_url:
        yield settings.model_copy(
            update={
                "database_url": SecretStr(database_url),
                "broker_url": SecretStr(broker),
                "work_dir": tmp_path / "shared-work-store",
                "broker_visibility_timeout_s": visibility_s,
                # How soon a copy of a message that found its job held elsewhere looks again.
                "job_lease_heartbeat_s": 1.0,
            }
        )


@pytest.fixture()
def workers(scale_settings: Settings, tmp_path: Path) -> Iterator[list[Worker]]:
    """Two workers, each with a run directory of its own (two machines), the same work store."""
    with running_workers(scale_settings, tmp_path, {"w1": "studies", "w2": "studies"}) as started:
        yield started


def _seed(live_settings: Settings, tmp_path: Path, patient_id: str, seeded: list[SeededStudy], **update: object) -> SeededStudy:
    seed = next(_seeds)
    study = seed_phantom(live_settings, tmp_path / f"phantom-{seed}", phantom_spec(seed, patient_id, **update))
    seeded.append(study)
    return study


def test_a_batch_spreads_over_two_workers_and_approvals_resume_on_a_free_one(
    workers: list[Worker], scale_settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    w1, w2 = workers
    studies = [_seed(live_settings, tmp_path, "WRK-batch", seeded) for _ in range(6)]
    ids = {s.imaging_study_id for s in studies}
    with AgentRuntime(scale_settings) as runtime:
        started = runtime.start_batch(worklist_of(studies[0].patient_reference))
        assert started.queued and not started.done
        batch = started.thread_id
        wait_until(lambda: len(runtime.report(batch).pending) == 6, 600, "six pending approvals", workers)

        segmented = {w.name: w.studies_at("segment") for w in workers}
        assert segmented["w1"] | segmented["w2"] == ids
        assert not segmented["w1"] & segmented["w2"], f"a study was segmented on both workers: {segmented}"
        assert segmented["w1"] and segmented["w2"], f"one worker took every study: {segmented}"
        for study in studies:
            assert_nothing_written(live_settings, study)

        # w1 leaves (warm shutdown): every approval resumes on the worker still there, also those of the
        # studies w1 prepared, whose work files are in the shared store.
        w1.stop()
        for pending in runtime.report(batch).pending:
            decided = runtime.decide(pending.thread_id, {pending.interrupt_id: approve()})
            assert decided.queued and not decided.pending
        wait_until(lambda: runtime.report(batch).done, 600, "the batch done", [w2])
        final = runtime.report(batch)
    assert sorted(o["outcome"] for o in final.outcomes) == ["completed"] * 6
    assert final.summary == {"studies": 6, "completed": 6}
    assert w2.studies_at("write_pacs") == ids and not w1.studies_at("write_pacs")
    for study in studies:
        assert_written_once(live_settings, study)


@pytest.mark.parametrize("visibility_s", [6.0])
@pytest.mark.parametrize("stage", ["segment", "write_pacs"])
def test_a_worker_killed_mid_job_the_other_finishes_it_and_nothing_is_written_twice(
    stage: str, workers: list[Worker], scale_settings: Settings, live_settings: Settings, seeded: list[SeededStudy],
    tmp_path: Path,
) -> None:
    # A bigger study than the batch's, so the kill lands inside its segmentation.
    study = _seed(live_settings, tmp_path, f"WRK-kill-{stage}", seeded, rows=512, columns=512, pixel_spacing_mm=0.75)
    sid = study.imaging_study_id
    with AgentRuntime(scale_settings) as runtime:
        job = runtime.start_study(sid).thread_id
        if stage != "segment":
            wait_until(lambda: runtime.report(job).pending, 600, "the approval", workers)
            [pending] = runtime.report(job).pending
            runtime.decide(job, {pending.interrupt_id: approve()})

        def running_it() -> list[Worker]:
            return [w for w in workers if (job, sid, stage) in w.stages()]

        wait_until(running_it, 600, f"a worker at {stage}", workers)
        [victim] = running_it()
        victim.kill()
        [survivor] = [w for w in workers if w is not victim]
        killed_stages = [s for j, _study, s in victim.stages() if j == job]
        before_kill = len(survivor.stages())

        if stage == "segment":
            wait_until(lambda: runtime.report(job).pending, 600, "the approval after the kill", [survivor])
            assert_nothing_written(live_settings, study)
            [pending] = runtime.report(job).pending
            runtime.decide(job, {pending.interrupt_id: approve()})
        wait_until(lambda: runtime.report(job).done, 600, "the job done after the kill", [survivor])
        final = runtime.report(job)
    assert [o["outcome"] for o in final.outcomes] == ["completed"]
    # The kill landed in the stage, and the survivor went on from the last checkpoint, not from the start.
    assert killed_stages[-1] == stage, killed_stages
    survived = [s for j, _study, s in survivor.stages()[before_kill:] if j == job]
    assert survived[0] == stage and "fetch" not in survived, survived
    assert_written_once(live_settings, study)


def test_jobs_and_approvals_through_the_api_run_on_the_workers(
    workers: list[Worker], scale_settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """`imaging-agent serve` with a broker: it queues the job and, after the radiologist's decision, its resume."""
    study = _seed(live_settings, tmp_path, "WRK-api", seeded)
    env = settings_env(scale_settings.model_copy(update={"run_dir": tmp_path / "api" / "run"}))
    added = subprocess.run(
        [str(CLI), "users", "add", "dr-queue", "--role", "radiologist", "--display-name", "Dr. Queue", "--password-stdin"],
        input="queue pass 1\n", env=env, capture_output=True, text=True, timeout=120,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("w") as out:
        service = subprocess.Popen([str(CLI), "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def healthy() -> bool:
        assert service.poll() is None, log.read_text()
        try:
            return http.get("/api/v1/health").status_code == 200
        except httpx.HTTPError:
            return False

    def job() -> dict[str, Any]:
        answer = http.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    try:
        wait_until(healthy, 120, "answer from the API service")
        token = http.post("/api/v1/auth/token", data={"username": "dr-queue", "password": "queue pass 1"})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        started = http.post("/api/v1/jobs", json={"kind": "study", "imaging_study_id": study.imaging_study_id}, headers=headers)
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
        wait_until(lambda: (job()["report"] or {}).get("pending"), 600, "the approval in the API", workers)
        [approval] = job()["report"]["pending"]
        decided = http.post(
            f"/api/v1/approvals/{approval['interrupt_id']}/decision", json={"decision": "approve"}, headers=headers
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["queued"] and not decided.json()["pending"]
        # The status follows the report: the worker writes "done" once its run has returned.
        wait_until(lambda: job()["status"] == "done", 600, "the job done", workers)
        assert job()["report"]["done"] and job()["error"] is None
    finally:
        service.terminate()
        service.wait(timeout=60)
        http.close()
    sid = study.imaging_study_id
    # The workers ran it, each part on exactly one of them (the service itself runs no job with a broker).
    assert len([w for w in workers if sid in w.studies_at("segment")]) == 1
    assert len([w for w in workers if sid in w.studies_at("write_pacs")]) == 1
    assert_written_once(live_settings, study)


def test_process_and_approvals_at_a_terminal_queue_for_the_workers(
    workers: list[Worker], scale_settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """`process` queues the job instead of running it (and refuses --yes); `approvals approve` queues the resume."""
    study = _seed(live_settings, tmp_path, "WRK-cli", seeded)
    sid = study.imaging_study_id
    me = pwd.getpwuid(os.getuid()).pw_name
    env = {**settings_env(scale_settings.model_copy(update={"run_dir": tmp_path / "cli" / "run", "local_radiologists": [me]})),
           "COLUMNS": "300"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)

    refused = cli("process", "--study", sid, "--yes")
    assert refused.returncode == 2 and "approvals approve" in refused.stdout + refused.stderr
    queued = cli("process", "--study", sid)
    assert queued.returncode == 0 and "Queued job" in queued.stdout, queued.stdout + queued.stderr
    with AgentRuntime(scale_settings) as runtime:
        [job] = [j.thread_id for j in runtime.jobs() if j.label == f"ImagingStudy/{sid}"]
        wait_until(lambda: runtime.report(job).pending, 600, "the approval", workers)
        [pending] = runtime.report(job).pending
        approved = cli("approvals", "approve", pending.interrupt_id)
        assert approved.returncode == 0 and "first free worker" in approved.stdout, approved.stdout + approved.stderr
        wait_until(lambda: runtime.report(job).done, 600, "the job done", workers)
    assert len([w for w in workers if sid in w.studies_at("write_pacs")]) == 1
    assert_written_once(live_settings, study)


@pytest.fixture()
def engine_settings(scale_settings: Settings) -> Settings:
    return scale_settings.model_copy(update={"engine_queue": "engines"})


@pytest.fixture()
def split_workers(engine_settings: Settings, tmp_path: Path) -> Iterator[tuple[Worker, list[Worker]]]:
    """A CPU machine on the `studies` queue and two GPU machines on `engines`: run directories of their
    own, the one work store."""
    with running_workers(engine_settings, tmp_path, {"s1": "studies", "e1": "engines", "e2": "engines"}) as started:
        studies, *engines = started
        yield studies, engines


def _engine_result(runtime: AgentRuntime, job: str) -> EngineResult:
    """What the engine worker wrote for the job, found through the job's checkpoint (its work folder)."""
    fetched = runtime.graphs["study"].get_state({"configurable": {"thread_id": job}}).values["fetched"]
    folder = request_folder(fetched.work_dir, "approval", job)
    return EngineResult.model_validate_json((folder / "result.json").read_text())


def test_segmentation_runs_on_an_engine_worker_and_the_rest_on_a_studies_worker(
    split_workers: tuple[Worker, list[Worker]], engine_settings: Settings, live_settings: Settings,
    seeded: list[SeededStudy], tmp_path: Path,
) -> None:
    studies, engines = split_workers
    study = _seed(live_settings, tmp_path, "WRK-engines", seeded)
    sid = study.imaging_study_id
    with AgentRuntime(engine_settings) as runtime:
        job = runtime.start_study(sid).thread_id
        wait_until(lambda: runtime.report(job).pending, 600, "the approval", [studies, *engines])
        [ran_it] = [w for w in engines if job in w.segmentations()]
        result = _engine_result(runtime, job)
        [pending] = runtime.report(job).pending
        runtime.decide(job, {pending.interrupt_id: approve()})
        wait_until(lambda: runtime.report(job).done, 600, "the job done", [studies, *engines])
        final = runtime.report(job)
    assert [o["outcome"] for o in final.outcomes] == ["completed"]
    # The engine worker segmented; the studies worker fetched, built and wrote, and was free while it waited.
    assert result.worker.startswith(f"{ran_it.name}@") and result.error is None, result
    assert ran_it.segmentations() == [job]
    assert not studies.segmentations() and not any(w.stages() for w in engines)
    done_by_studies = [s for j, _sid, s in studies.stages() if j == job]
    for stage in ("fetch", "assemble", "preflight", "segment", "build", "write_pacs", "write_fhir"):
        assert stage in done_by_studies, done_by_studies
    assert f"job {job}: segmentation queued for the engine workers" in studies.text()
    assert_written_once(live_settings, study)


@pytest.mark.parametrize("visibility_s", [6.0])
def test_an_engine_worker_killed_mid_segmentation_another_engine_worker_takes_it(
    split_workers: tuple[Worker, list[Worker]], engine_settings: Settings, live_settings: Settings,
    seeded: list[SeededStudy], tmp_path: Path,
) -> None:
    studies, engines = split_workers
    # A bigger study, so the kill lands inside its segmentation.
    study = _seed(live_settings, tmp_path, "WRK-engine-kill", seeded, rows=512, columns=512, pixel_spacing_mm=0.75)
    with AgentRuntime(engine_settings) as runtime:
        job = runtime.start_study(study.imaging_study_id).thread_id

        def segmenting() -> list[Worker]:
            return [w for w in engines if job in w.segmentations()]

        wait_until(segmenting, 600, "an engine worker segmenting", [studies, *engines])
        [victim] = segmenting()
        victim.kill()
        [survivor] = [w for w in engines if w is not victim]
        wait_until(lambda: runtime.report(job).pending, 600, "the approval after the kill", [studies, survivor])
        result = _engine_result(runtime, job)
        assert_nothing_written(live_settings, study)
        [pending] = runtime.report(job).pending
        runtime.decide(job, {pending.interrupt_id: approve()})
        wait_until(lambda: runtime.report(job).done, 600, "the job done after the kill", [studies, survivor])
        final = runtime.report(job)
    assert [o["outcome"] for o in final.outcomes] == ["completed"]
    # Redelivered (acks_late): the survivor answered the request the killed worker never finished.
    assert job in survivor.segmentations()
    assert result.worker.startswith(f"{survivor.name}@") and result.error is None, result
    assert_written_once(live_settings, study)
