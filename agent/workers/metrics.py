"""A worker's Prometheus figures (`imaging-agent worker --metrics-port P`): served by the worker's
main process, gathered from its pool processes.

Jobs run in Celery's pool processes, forked from the worker, and each counts the pipeline's figures
(graphs/metrics.py) in its own memory. prometheus_client's multiprocess mode makes every process write
them to files in one folder, which the main process sums at scrape time. That mode is chosen when
prometheus_client is first imported, so `serve_worker_metrics` runs before anything imports it (the
worker command calls it before it loads the tasks). The API service's /metrics keeps the figures read
from the database and the broker (jobs by state, queue depth), which cover every worker.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def serve_worker_metrics(directory: Path, host: str, port: int) -> None:
    """Serve GET /metrics on host:port from a thread of this process, over the figures the pool
    processes write to `directory` (emptied first: a worker's counts start at its start, as a
    process's do)."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("serve_worker_metrics must run before prometheus_client is imported (multiprocess mode)")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # read by prometheus_client in every process
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    start_http_server(port, addr=host, registry=registry)
