"""`imaging-agent worker` processes for the worker tests, each as a machine of its own: its own run
directory, its own process group (a SIGKILL of the group is the machine dying), its own log.

Which worker ran which stage of which study is read from the logs: a worker logs each stage it
starts as `job THREAD_ID: study IMAGING_STUDY_ID STAGE`, and an engine worker each segmentation it
takes as `job THREAD_ID: segmentation on engine worker NAME@HOST` (agent/workers/tasks.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr

from agent.settings import Settings

CLI = Path(sys.executable).parent / "imaging-agent"
_STAGE = re.compile(r"job (\S+): study (\S+) (\w+)$", re.M)
_SEGMENTATION = re.compile(r"job (\S+): segmentation on engine worker ", re.M)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess exactly these settings (secrets included, never on a command line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGING_AGENT_")}
    for name, value in settings.model_dump(mode="json").items():
        raw = getattr(settings, name)
        if raw is None:
            continue
        if isinstance(raw, SecretStr):
            value = raw.get_secret_value()
        env[f"IMAGING_AGENT_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


class Worker:
    def __init__(
        self, name: str, settings: Settings, log_dir: Path, queues: str = "studies", options: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.settings = settings
        self.log = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [str(CLI), "worker", "--name", name, "--concurrency", "1", "--queues", queues, *options],
                env=settings_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: the pool child dies with it
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        wait_until(lambda: " ready." in self.text(), timeout_s, f"worker {self.name} ready", self)

    def stages(self) -> list[tuple[str, str, str]]:
        """(job, ImagingStudy id, stage) for every stage this worker started, in order."""
        return _STAGE.findall(self.text())

    def studies_at(self, stage: str) -> set[str]:
        return {study for _job, study, s in self.stages() if s == stage}

    def segmentations(self) -> list[str]:
        """The jobs whose segmentation this (engine) worker took, in order."""
        return _SEGMENTATION.findall(self.text())

    def kill(self) -> None:
        """The machine dies: SIGKILL to the worker and its pool process at once."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """A warm shutdown (SIGTERM): the task in hand finishes, nothing new is taken."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # a pool process left behind
        except ProcessLookupError:
            pass


@contextmanager
def running_workers(
    settings: Settings, tmp_path: Path, queues: Mapping[str, str]
) -> Iterator[list[Worker]]:
    """One `imaging-agent worker` per name (name -> its queues), each with a run directory of its own
    (as on machines of their own) and `settings`' shared work store; all ready before the test, all
    stopped by PID afterwards."""
    started = [
        Worker(name, settings.model_copy(update={"run_dir": tmp_path / name / "run"}), tmp_path / "logs", queue)
        for name, queue in queues.items()
    ]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.stop()


def wait_until(check: Callable[[], object], timeout_s: float, what: str, workers: Worker | Iterable[Worker] = ()) -> None:
    """Poll `check` until it is true; on timeout fail naming `what`, with the workers' log tails."""
    deadline = time.monotonic() + timeout_s
    while not check():
        group = [workers] if isinstance(workers, Worker) else list(workers)
        for worker in group:
            assert worker.process.poll() is None, f"worker {worker.name} exited:\n{worker.text()[-4000:]}"
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {w.name}\n{w.text()[-3000:]}" for w in group)
            raise AssertionError(f"no {what} within {timeout_s:.0f} s\n{tails}")
        time.sleep(0.05)
