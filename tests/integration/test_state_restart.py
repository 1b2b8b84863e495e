"""PostgreSQL restarted in the middle of a batch on the workers: every study ends completed or with a
failed Task that says why, nothing is lost or written twice, and a second run finishes the failed ones.

The cluster is one of this test's own (tests/state_databases.py), stopped and started again by its PID,
so no other test's database goes away under it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.runtime import AgentRuntime
from agent.services import process
from agent.services.postgres import PostgresCluster, postgres_spec
from agent.settings import Settings
from graphs.runtime import RunReport
from tests.conftest import free_port
from tests.integration.worker_processes import Worker, running_workers, wait_until
from tests.integration.workflow_helpers import (
    SeededStudy,
    approve,
    assert_written_once,
    phantom_spec,
    seed_phantom,
    task_of,
    worklist_of,
)
from tests.state_databases import fresh_database, running_cluster

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.workers]

_seeds = itertools.count(5301)
# Longer than a worker's first retries and a step or two, shorter than the checkpointer pool's wait (30 s).
DOWN_S = 6.0


@pytest.fixture()
def cluster() -> Iterator[PostgresCluster]:
    with running_cluster(free_port()) as started:
        yield started


@pytest.fixture()
def restart_settings(settings: Settings, cluster: PostgresCluster, redis_broker: str, tmp_path: Path) -> Iterator[Settings]:
    with fresh_database(cluster) as database_url:
        yield settings.model_copy(
            update={
                "database_url": SecretStr(database_url),
                # A database of the Redis server of its own: no other test's messages.
                "broker_url": SecretStr(f"{redis_broker.rsplit('/', 1)[0]}/15"),
                "work_dir": tmp_path / "shared-work-store",
                "job_lease_heartbeat_s": 1.0,
            }
        )


@pytest.fixture()
def workers(restart_settings: Settings, tmp_path: Path) -> Iterator[list[Worker]]:
    with running_workers(restart_settings, tmp_path, {"w1": "studies", "w2": "studies"}) as started:
        yield started


def _restart(cluster: PostgresCluster, down_s: float) -> None:
    """Stop the server (fast shutdown: every connection cut), leave it down a while, start it again."""
    spec = postgres_spec(cluster)
    assert process.stop(spec)
    time.sleep(down_s)
    process.start(spec, timeout_s=60)


def _run_to_the_end(runtime: AgentRuntime, batch: str, workers: list[Worker]) -> RunReport:
    """Approve each approval as it comes until the batch is done."""

    def finished() -> bool:
        report = runtime.report(batch)
        for pending in report.pending:
            runtime.decide(pending.thread_id, {pending.interrupt_id: approve()})
        return report.done

    wait_until(finished, 900, f"batch {batch} done", workers)
    return runtime.report(batch)


def test_postgres_restarted_mid_batch_loses_nothing_and_a_second_run_finishes_the_failed(
    workers: list[Worker], cluster: PostgresCluster, restart_settings: Settings, live_settings: Settings,
    seeded: list[SeededStudy], tmp_path: Path,
) -> None:
    studies = []
    for _ in range(4):
        seed = next(_seeds)
        studies.append(seed_phantom(live_settings, tmp_path / f"phantom-{seed}", phantom_spec(seed, "RST-batch")))
    seeded.extend(studies)
    by_id = {s.imaging_study_id: s for s in studies}
    worklist = worklist_of(studies[0].patient_reference)

    with AgentRuntime(restart_settings) as runtime:
        batch = runtime.start_batch(worklist).thread_id
        # Once while the studies are prepared, once while the approved ones are written.
        wait_until(lambda: any(w.studies_at("assemble") for w in workers), 600, "a study in progress", workers)
        _restart(cluster, down_s=DOWN_S)
        wait_until(lambda: runtime.report(batch).pending, 600, "a first approval", workers)
        for pending in runtime.report(batch).pending:
            runtime.decide(pending.thread_id, {pending.interrupt_id: approve()})
        wait_until(lambda: any(w.studies_at("write_pacs") for w in workers), 600, "a study being written", workers)
        _restart(cluster, down_s=DOWN_S)
        first = _run_to_the_end(runtime, batch, workers)

        outcomes = {o["imaging_study_id"]: o for o in first.outcomes}
        assert set(outcomes) == set(by_id), f"a study was lost: {sorted(set(by_id) - set(outcomes))}"
        failed = {sid for sid, o in outcomes.items() if o["outcome"] != "completed"}
        for sid in failed:
            assert outcomes[sid]["outcome"] == "failed", outcomes[sid]
            task = task_of(live_settings, by_id[sid])
            assert task.status == "failed" and task.statusReason and task.statusReason.text, task

        second = _run_to_the_end(runtime, runtime.start_batch(worklist).thread_id, workers)
    assert {o["imaging_study_id"] for o in second.outcomes} == failed
    assert all(o["outcome"] == "completed" for o in second.outcomes), second.outcomes
    for study in studies:
        assert_written_once(live_settings, study)
