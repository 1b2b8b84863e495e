"""One runner per job: a lease per job in the runtime's SQLite file.

Two processes resuming the same LangGraph thread at once both write the same work folder and
the same checkpoints (issue 10: the first failed on a half-written file, the second crashed).
So a job runs only while its runner holds the job's row in `job_leases`:

- the owner is a process (pid, host, the host's boot id, the process's start time) plus a random
  token per run, so two runs in one process are two owners as well;
- taking a lease is one `BEGIN IMMEDIATE` transaction: read the row, then insert it, or replace
  it only when its owner is gone; no other writer can come in between;
- an owner is gone when, on this host (same host name and boot id), its pid no longer runs (or
  now names another process: a different start time, or a zombie); on another host, or when the
  boot id is unknown, when its heartbeat is older than the expiry (a process on another machine
  cannot be asked whether it lives);
- while it runs the owner heartbeats from a thread; a heartbeat that finds its row taken (another
  host decided it was gone) marks the lease lost, and the runtime stops the run at its next event.

See docs/architecture.md, "Durability".
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from pydantic import BaseModel

log = logging.getLogger(__name__)


class LeaseHolder(BaseModel):
    """A row of `job_leases`: who runs the job, since when, and when it last said so."""

    thread_id: str
    token: str
    pid: int
    host: str
    boot_id: str | None
    pid_started: int | None
    acquired_at: float
    heartbeat_at: float

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.acquired_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"job {self.thread_id} is being run by pid {self.pid} on host {self.host} since {since}"


class JobBusyError(RuntimeError):
    """The job's lease is held by a runner that is still alive."""

    def __init__(self, holder: LeaseHolder) -> None:
        super().__init__(f"{holder.describe()}; wait for it or stop that process")
        self.holder = holder


class LeaseLostError(RuntimeError):
    """Another runner took this run's lease (it judged this one gone): the run must stop."""


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    host: str
    boot_id: str | None
    pid_started: int | None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks after boot) from /proc, or None where there is no /proc entry."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so split after the last ")".
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def this_process() -> ProcessIdentity:
    stat = _proc_stat(os.getpid())
    return ProcessIdentity(
        pid=os.getpid(), host=socket.gethostname(), boot_id=_boot_id(), pid_started=stat[1] if stat else None
    )


def process_alive(pid: int, started: int | None) -> bool:
    """Whether `pid` on this host is still the process that took the lease."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    stat = _proc_stat(pid)
    if stat is None:
        # Without /proc (macOS) the signal is all there is to ask; on Linux the process just exited.
        return not Path("/proc/self").exists()
    state, pid_started = stat
    # A zombie has exited (its parent has not reaped it yet); another start time is a reused pid.
    return state != "Z" and (started is None or pid_started == started)


class Lease:
    """A held lease; as a context manager it heartbeats while the block runs and releases after."""

    def __init__(self, store: LeaseStore, holder: LeaseHolder) -> None:
        self.store = store
        self.holder = holder
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{holder.thread_id}", daemon=True)

    @property
    def thread_id(self) -> str:
        return self.holder.thread_id

    def _beat(self) -> None:
        while not self._stop.wait(self.store.heartbeat_s):
            try:
                if not self.store.heartbeat(self):
                    log.error("lease of job %s was taken by another runner; this run stops", self.thread_id)
                    self.lost.set()
                    return
            except sqlite3.Error as exc:  # a busy database: try again at the next beat
                log.warning("heartbeat of job %s failed: %s", self.thread_id, exc)

    def check(self) -> None:
        """Raise if another runner took over this job (the run must not write on)."""
        if self.lost.is_set():
            raise LeaseLostError(
                f"job {self.thread_id}: another runner took over this job (no heartbeat from here for "
                f"{self.store.expiry_s:.0f} s); this run stopped, the other one continues it."
            )

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.store.release(self)


_COLUMNS = "thread_id, token, pid, host, boot_id, pid_started, acquired_at, heartbeat_at"


class LeaseStore:
    """The `job_leases` table in the runtime's SQLite file.

    `expiry_s`: how old a heartbeat may be before a runner on another host counts as gone;
    `heartbeat_s`: how often a running job renews it (well below the expiry).
    """

    def __init__(
        self, path: Path, *, expiry_s: float, heartbeat_s: float, identity: ProcessIdentity | None = None
    ) -> None:
        if not 0 < heartbeat_s < expiry_s:
            raise ValueError(f"job lease heartbeat ({heartbeat_s} s) must be positive and below its expiry ({expiry_s} s)")
        self.expiry_s = expiry_s
        self.heartbeat_s = heartbeat_s
        self.me = identity or this_process()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode, so that `acquire` controls its own transaction (BEGIN IMMEDIATE).
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS job_leases (thread_id TEXT PRIMARY KEY, token TEXT NOT NULL,"
                " pid INTEGER NOT NULL, host TEXT NOT NULL, boot_id TEXT, pid_started INTEGER,"
                " acquired_at REAL NOT NULL, heartbeat_at REAL NOT NULL)"
            )

    def close(self) -> None:
        self._conn.close()

    def _row(self, thread_id: str) -> LeaseHolder | None:
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM job_leases WHERE thread_id = ?", (thread_id,)).fetchone()
        return LeaseHolder(**dict(zip(_COLUMNS.split(", "), row, strict=True))) if row else None

    def owner_gone(self, holder: LeaseHolder, now: float | None = None) -> bool:
        same_host = holder.host == self.me.host and holder.boot_id is not None and holder.boot_id == self.me.boot_id
        if same_host:
            return not process_alive(holder.pid, holder.pid_started)
        return (now if now is not None else time.time()) - holder.heartbeat_at > self.expiry_s

    def holder(self, thread_id: str) -> LeaseHolder | None:
        """Who holds the job's lease now, if that runner is still alive."""
        with self._lock:
            holder = self._row(thread_id)
        return None if holder is None or self.owner_gone(holder) else holder

    def last_holder(self, thread_id: str) -> LeaseHolder | None:
        """The job's lease row, whether its runner lives or not (a gone one is what a resume takes over)."""
        with self._lock:
            return self._row(thread_id)

    def acquire(self, thread_id: str) -> Lease:
        """Take the job's lease, or raise JobBusyError naming the live runner that holds it."""
        now = time.time()
        mine = LeaseHolder(
            thread_id=thread_id,
            token=uuid.uuid4().hex,
            pid=self.me.pid,
            host=self.me.host,
            boot_id=self.me.boot_id,
            pid_started=self.me.pid_started,
            acquired_at=now,
            heartbeat_at=now,
        )
        with self._lock:
            # The write lock from the first statement on: read, judge and replace as one step.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                current = self._row(thread_id)
                if current is not None and not self.owner_gone(current, now):
                    raise JobBusyError(current)
                if current is not None:
                    log.info("job %s: taking over from pid %s on %s (gone)", thread_id, current.pid, current.host)
                self._conn.execute(
                    f"INSERT OR REPLACE INTO job_leases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    tuple(mine.model_dump().values()),
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return Lease(self, mine)

    def heartbeat(self, lease: Lease) -> bool:
        """Renew the lease; False when its row now belongs to another runner."""
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE job_leases SET heartbeat_at = ? WHERE thread_id = ? AND token = ?",
                (time.time(), lease.thread_id, lease.holder.token),
            )
        return cursor.rowcount == 1

    def release(self, lease: Lease) -> None:
        with self._lock:
            self._conn.execute(
                "DELETE FROM job_leases WHERE thread_id = ? AND token = ?", (lease.thread_id, lease.holder.token)
            )
