"""One function run in a forked child process, on the other core, while this process goes on.

Why fork rather than a process pool: the child sees the parent's arrays (a CT volume and its
masks, hundreds of MB) copy-on-write, with nothing pickled on the way in; only the small
result comes back, pickled through a pipe. The offline `contour` command builds its DICOM
objects this way while it measures and QA-checks the masks (issue 11: use both cores).

Fork only from a single-threaded process (a CLI command): a thread holding a lock at the
moment of the fork leaves that lock held forever in the child. The child never returns into
the caller's stack: it ends with os._exit, so no atexit handler or buffered output runs twice.
"""

from __future__ import annotations

import os
import pickle
import signal
import traceback
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Receive = Callable[[], Any]


class ForkedCallError(RuntimeError):
    """The child failed or died; the message says how."""


class ForkedCall(Generic[T]):
    """``fn(receive)`` running in a child; ``send`` answers the child's ``receive()`` calls.

    Use as a context manager: leaving the block early (an exception in the parent) kills and
    reaps the child, so no orphan keeps writing files.
    """

    def __init__(self, fn: Callable[[Receive], T], what: str) -> None:
        self._what = what
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        self._pid = os.fork()
        if self._pid == 0:
            os.close(self._to_child)
            os.close(self._from_child)
            _run_child(fn, to_child_r, from_child_w)
        os.close(to_child_r)
        os.close(from_child_w)
        self._done = False

    def send(self, message: object) -> None:
        """Hand ``message`` to the child's next ``receive()``."""
        try:
            with os.fdopen(os.dup(self._to_child), "wb") as pipe:
                pickle.dump(message, pipe, protocol=pickle.HIGHEST_PROTOCOL)
        except BrokenPipeError:
            pass  # the child has ended already: result() says how

    def result(self) -> T:
        """Wait for the child and return what ``fn`` returned, or raise what went wrong there."""
        with os.fdopen(os.dup(self._from_child), "rb") as pipe:
            try:
                outcome = pickle.load(pipe)
            except (EOFError, pickle.UnpicklingError):
                outcome = None
        status = self._reap()
        if outcome is None:
            raise ForkedCallError(f"{self._what} stopped without a result ({_describe(status)}); run the command again.")
        ok, value = outcome
        if not ok:
            raise ForkedCallError(f"{self._what} failed: {value}")
        return value

    def _reap(self) -> int:
        os.close(self._to_child)
        os.close(self._from_child)
        self._done = True
        _, status = os.waitpid(self._pid, 0)
        return status

    def __enter__(self) -> ForkedCall[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            os.kill(self._pid, signal.SIGKILL)
            self._reap()


def _run_child(fn: Callable[[Receive], Any], inbox_fd: int, outbox_fd: int) -> None:
    inbox = os.fdopen(inbox_fd, "rb")
    code = 0
    try:
        outcome: tuple[bool, Any] = (True, fn(lambda: pickle.load(inbox)))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent, which raises it
        code = 1
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
        outcome = (False, f"{type(exc).__name__}: {exc}{where}")
    try:
        with os.fdopen(outbox_fd, "wb") as outbox:
            pickle.dump(outcome, outbox, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        os._exit(code)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
