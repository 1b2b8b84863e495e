"""Job leases (tools/workflow/leases.py): take, heartbeat, expiry, dead pid, on SQLite and PostgreSQL.

Owners are real processes: a `sleep` child stands for a live runner, a reaped child for a killed
one, a killed but unreaped child for a zombie. Another host is an identity with another host name.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.exc import OperationalError

from tools.state.database import sqlite_url, state_engine
from tools.state.schema import job_leases
from tools.workflow.leases import JobBusyError, LeaseLostError, LeaseStore, ProcessIdentity, this_process

pytestmark = pytest.mark.unit

JOB = "study-20260101-000000-abcdef"


@pytest.fixture()
def db(state_engine: Engine) -> Engine:
    return state_engine


@pytest.fixture()
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process on this host, to stand for another runner."""
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()


def _store(db: Engine, identity: ProcessIdentity | None = None, expiry_s: float = 60.0, heartbeat_s: float = 10.0) -> LeaseStore:
    return LeaseStore(db, expiry_s=expiry_s, heartbeat_s=heartbeat_s, identity=identity)


def _as(pid: int) -> ProcessIdentity:
    """This host's identity for another pid (its start time unknown, as on a system without /proc)."""
    return replace(this_process(), pid=pid, pid_started=None)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lease_is_taken_once_and_released_after_the_run(db: Engine) -> None:
    store = _store(db)
    with store.acquire(JOB) as lease:
        assert store.holder(JOB) == lease.holder
        # A second run in the same process is a second owner: refused, with who, where and since when.
        with pytest.raises(JobBusyError) as refused:
            _store(db).acquire(JOB)
        message = str(refused.value)
        assert f"job {JOB} is being run by pid {lease.holder.pid} on host {lease.holder.host} since " in message
        assert message.endswith("wait for it or stop that process")
    assert store.holder(JOB) is None and store.last_holder(JOB) is None
    with _store(db).acquire(JOB):
        pass


def test_a_live_process_keeps_its_lease(db: Engine, sleeper: subprocess.Popen[bytes]) -> None:
    _store(db, _as(sleeper.pid)).acquire(JOB)
    with pytest.raises(JobBusyError, match=f"pid {sleeper.pid}"):
        _store(db).acquire(JOB)


def test_the_lease_of_a_dead_pid_is_taken_over(db: Engine) -> None:
    dead = _dead_pid()
    _store(db, _as(dead)).acquire(JOB)
    assert _store(db).holder(JOB) is None, "a killed runner still counts as running"
    assert _store(db).last_holder(JOB).pid == dead  # type: ignore[union-attr]
    with _store(db).acquire(JOB) as lease:
        assert lease.holder.pid != dead


def test_a_zombie_and_a_reused_pid_count_as_gone(db: Engine) -> None:
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(0.5)  # exited, not reaped: the pid still answers a signal
    _store(db, _as(zombie.pid)).acquire(JOB)
    try:
        assert _store(db).holder(JOB) is None
    finally:
        zombie.wait()
    me = this_process()
    assert me.pid_started is not None, "no /proc start time on this Linux host"
    # The pid lives, but started at another time: the runner that took the lease is gone, the pid was reused.
    _store(db, replace(me, pid_started=me.pid_started - 1)).acquire("other-job")
    assert _store(db).holder("other-job") is None


def test_a_running_job_heartbeats(db: Engine) -> None:
    store = _store(db, expiry_s=1.0, heartbeat_s=0.05)
    with store.acquire(JOB) as lease:
        first = store.last_holder(JOB).heartbeat_at  # type: ignore[union-attr]
        time.sleep(0.3)
        assert store.last_holder(JOB).heartbeat_at > first  # type: ignore[union-attr]
        lease.check()


def test_another_hosts_lease_expires_without_heartbeats(db: Engine) -> None:
    remote = replace(this_process(), host="ct-node-2", boot_id="another-boot")
    # Its pid is ours (alive here), which must not matter: only the heartbeat can speak for it.
    _store(db, remote).acquire(JOB)
    local = _store(db, expiry_s=0.5, heartbeat_s=0.1)
    with pytest.raises(JobBusyError, match="on host ct-node-2"):
        local.acquire(JOB)
    time.sleep(0.7)
    with local.acquire(JOB) as lease:
        assert lease.holder.host == this_process().host


def test_another_hosts_lease_lives_while_it_heartbeats(db: Engine) -> None:
    remote = _store(db, replace(this_process(), host="ct-node-2", boot_id="another-boot"), expiry_s=0.5, heartbeat_s=0.05)
    with remote.acquire(JOB):
        time.sleep(0.8)
        with pytest.raises(JobBusyError):
            _store(db, expiry_s=0.5, heartbeat_s=0.1).acquire(JOB)


def test_a_run_whose_lease_was_taken_learns_it_at_the_next_heartbeat(db: Engine) -> None:
    store = _store(db, expiry_s=1.0, heartbeat_s=0.05)
    with store.acquire(JOB) as lease:
        # Another host judged this runner gone (say it was suspended) and took the job.
        with db.begin() as conn:
            conn.execute(update(job_leases).where(job_leases.c.thread_id == JOB).values(token="theirs"))
        time.sleep(0.3)
        with pytest.raises(LeaseLostError, match=f"job {JOB}: another runner took over"):
            lease.check()
    assert store.last_holder(JOB).token == "theirs"  # type: ignore[union-attr]  # not released by the loser


def _race(stores: list[LeaseStore]) -> tuple[list[str], int]:
    """Every store tries to acquire JOB at the same moment; (the winners' lease tokens, how many were refused)."""
    start = threading.Barrier(len(stores))
    won: list[str] = []
    refused: list[int] = []

    def race(store: LeaseStore) -> None:
        start.wait()
        try:
            won.append(store.acquire(JOB).holder.token)
        except JobBusyError:
            refused.append(1)

    threads = [threading.Thread(target=race, args=(store,)) for store in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, len(refused)


def test_taking_a_lease_is_atomic(db: Engine) -> None:
    """Eight runners (own connections) race for one job: exactly one gets it."""
    won, refused = _race([_store(db) for _ in range(8)])
    assert len(won) == 1 and refused == 7


def test_taking_over_a_gone_runners_lease_is_atomic(db: Engine) -> None:
    """Eight runners find the same dead owner's lease at once: exactly one takes it over."""
    _store(db, _as(_dead_pid())).acquire(JOB)
    won, refused = _race([_store(db) for _ in range(8)])
    assert len(won) == 1 and refused == 7
    assert _store(db).last_holder(JOB).token == won[0]  # type: ignore[union-attr]


def test_the_heartbeat_must_be_shorter_than_the_expiry(db: Engine) -> None:
    with pytest.raises(ValueError, match="below its expiry"):
        _store(db, expiry_s=10, heartbeat_s=10)


def test_a_lease_left_behind_by_a_run_of_this_process_is_taken_over(db: Engine, tmp_path: Path) -> None:
    """The database was unreachable when a run released its lease: the row stays, naming this (live)
    process. The next run here takes it over instead of waiting forever for itself."""
    store = _store(db)
    lease = store.acquire(JOB)
    store.engine = state_engine(sqlite_url(tmp_path / "missing" / "agent.sqlite"))  # unreachable
    with pytest.raises(OperationalError):
        store.release(lease)
    store.engine = db
    assert store.last_holder(JOB) == lease.holder and store.holder(JOB) is None
    with _store(db).acquire(JOB) as again:
        assert store.holder(JOB) == again.holder
