"""One runner per job: a lease per job in the runtime's database (SQLite or PostgreSQL).

Two processes resuming the same LangGraph thread at once both write the same work folder and
the same checkpoints (issue 10: the first failed on a half-written file, the second crashed).
So a job runs only while its runner holds the job's row in `job_leases` (tools/state/schema.py):

- the owner is a process (pid, host, the host's boot id, the process's start time) plus a random
  token per run, so two runs in one process are two owners as well;
- taking a lease is atomic on both databases without locks of either's own: insert the row, which
  the primary key lets only one runner do; or, when a row is there and its owner is gone, replace
  it with an update that names the row exactly as read (token and heartbeat), so of two runners
  taking over the same lease only one update matches, and a heartbeat in between defeats both;
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
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from pydantic import BaseModel
from sqlalchemy import Engine, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from tools.state.schema import job_leases

log = logging.getLogger(__name__)

# The tokens of the leases this process holds now. A row naming this very process with a token not
# here was left by a run that ended without deleting it (the database was unreachable when it
# released): that runner is gone, though its process lives on (a worker's pool process, the API).
_HELD: set[str] = set()
_HELD_LOCK = threading.Lock()


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
            except SQLAlchemyError as exc:  # a busy or restarting database: try again at the next beat
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


class LeaseStore:
    """The `job_leases` table of the runtime's database.

    `expiry_s`: how old a heartbeat may be before a runner on another host counts as gone;
    `heartbeat_s`: how often a running job renews it (well below the expiry).
    """

    def __init__(
        self, engine: Engine, *, expiry_s: float, heartbeat_s: float, identity: ProcessIdentity | None = None
    ) -> None:
        if not 0 < heartbeat_s < expiry_s:
            raise ValueError(f"job lease heartbeat ({heartbeat_s} s) must be positive and below its expiry ({expiry_s} s)")
        self.expiry_s = expiry_s
        self.heartbeat_s = heartbeat_s
        self.me = identity or this_process()
        self.engine = engine

    def _row(self, thread_id: str) -> LeaseHolder | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(job_leases).where(job_leases.c.thread_id == thread_id)).mappings().first()
        return LeaseHolder(**row) if row else None

    def owner_gone(self, holder: LeaseHolder, now: float | None = None) -> bool:
        same_host = holder.host == self.me.host and holder.boot_id is not None and holder.boot_id == self.me.boot_id
        if same_host and (holder.pid, holder.pid_started) == (self.me.pid, self.me.pid_started):
            with _HELD_LOCK:
                return holder.token not in _HELD
        if same_host:
            return not process_alive(holder.pid, holder.pid_started)
        return (now if now is not None else time.time()) - holder.heartbeat_at > self.expiry_s

    def holder(self, thread_id: str) -> LeaseHolder | None:
        """Who holds the job's lease now, if that runner is still alive."""
        holder = self._row(thread_id)
        return None if holder is None or self.owner_gone(holder) else holder

    def last_holder(self, thread_id: str) -> LeaseHolder | None:
        """The job's lease row, whether its runner lives or not (a gone one is what a resume takes over)."""
        return self._row(thread_id)

    def acquire(self, thread_id: str) -> Lease:
        """Take the job's lease, or raise JobBusyError naming the live runner that holds it."""
        while True:
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
            # Held before the row exists, so no other run in this process ever sees the row as left behind.
            with _HELD_LOCK:
                _HELD.add(mine.token)
            taken = False
            try:
                taken = self._take(mine, now)
            finally:
                if not taken:
                    _forget(mine.token)
            if taken:
                return Lease(self, mine)

    def _take(self, mine: LeaseHolder, now: float) -> bool:
        """One try at the job's row: True when it is ours, False to try again, JobBusyError when a live runner has it."""
        if self._insert(mine):
            return True
        current = self._row(mine.thread_id)
        if current is None:
            return False  # released between the two statements: try the insert again
        if not self.owner_gone(current, now):
            raise JobBusyError(current)
        if self._replace(current, mine):
            log.info("job %s: taking over from pid %s on %s (gone)", mine.thread_id, current.pid, current.host)
            return True
        return False  # another runner took it over, or the owner heartbeated, in between: judge the row anew

    def _insert(self, mine: LeaseHolder) -> bool:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(job_leases).values(**mine.model_dump()))
        except IntegrityError:
            return False
        return True

    def _replace(self, current: LeaseHolder, mine: LeaseHolder) -> bool:
        """Replace exactly the row that was judged gone; False when it changed since it was read."""
        as_read = and_(
            job_leases.c.thread_id == current.thread_id,
            job_leases.c.token == current.token,
            job_leases.c.heartbeat_at == current.heartbeat_at,
        )
        with self.engine.begin() as conn:
            return conn.execute(update(job_leases).where(as_read).values(**mine.model_dump())).rowcount == 1

    def heartbeat(self, lease: Lease) -> bool:
        """Renew the lease; False when its row now belongs to another runner."""
        with self.engine.begin() as conn:
            cursor = conn.execute(
                update(job_leases)
                .where(job_leases.c.thread_id == lease.thread_id, job_leases.c.token == lease.holder.token)
                .values(heartbeat_at=time.time())
            )
        return cursor.rowcount == 1

    def release(self, lease: Lease) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    delete(job_leases).where(
                        job_leases.c.thread_id == lease.thread_id, job_leases.c.token == lease.holder.token
                    )
                )
        finally:  # a row the database kept is now one a later run here (or elsewhere) may take over
            _forget(lease.holder.token)


def _forget(token: str) -> None:
    with _HELD_LOCK:
        _HELD.discard(token)
