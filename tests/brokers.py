"""The broker the worker tests run on: Debian's redis-server, started as `services up --scale` starts
it (agent/services/scale.py), in a temporary folder on a free 127.0.0.1 port, stopped by its PID."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.services import process
from agent.services.scale import broker_url_file, redis_spec
from agent.settings import Settings


@contextmanager
def running_redis(port: int) -> Iterator[str]:
    """A password-protected Redis for the test session; yields its broker URL (password included)."""
    base = Path(tempfile.mkdtemp(prefix="imaging-agent-redis-"))
    settings = Settings(run_dir=base, redis_port=port, _env_file=None)
    spec = None
    try:
        spec = redis_spec(settings)
        process.start(spec, timeout_s=60)
        yield broker_url_file(settings).read_text().strip()
    finally:
        if spec is not None:
            process.stop(spec)
        shutil.rmtree(base, ignore_errors=True)


__all__ = ["running_redis"]
