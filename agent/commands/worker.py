"""`imaging-agent worker`: a Celery worker that runs the jobs the API, the CLI and the chat queue."""

from __future__ import annotations

from typing import Annotated

import typer

from agent.commands import output
from agent.settings import get_settings


def worker(
    queues: Annotated[
        str,
        typer.Option(
            "--queues", "-Q",
            help="Comma-separated queues to take work from: studies (fetch, build, write-back: every job task), "
            "engines (the jobs' segmentation, for the machines with the engines or GPUs; used when "
            "IMAGING_AGENT_ENGINE_QUEUE=engines).",
        ),
    ] = "studies",
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Pool processes: jobs this worker runs at the same time.")
    ] = 1,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="The worker's name (default: celery@HOST); unique per machine.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve this worker's Prometheus figures (step durations, approval wait, engine errors, writes) "
            "at http://HOST:PORT/metrics, summed over its pool processes. Default: not served.",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address for --metrics-port (no sign-in: keep it internal).")
    ] = "127.0.0.1",
) -> None:
    """Run jobs from the broker (IMAGING_AGENT_BROKER_URL) until stopped; start one or more per machine.

    Every worker shares the state database (IMAGING_AGENT_DATABASE_URL, PostgreSQL) and the work store
    (IMAGING_AGENT_WORK_DIR, at the same path on every machine) with the API and the other workers.
    """
    from agent.workers.celery_app import ENGINES_QUEUE, QUEUES, BrokerNotConfiguredError, build_celery_app

    settings = get_settings()
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - set(QUEUES))
    if not wanted or unknown:
        output.error(f"unknown queue(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(QUEUES)}")
        raise typer.Exit(2)
    try:
        app = build_celery_app(settings)
    except BrokerNotConfiguredError as exc:
        output.error(exc)
        raise typer.Exit(2) from exc
    # Both work on one machine; on several, jobs started or resumed elsewhere would not be found here.
    # An engine worker reads and writes the work store only.
    if settings.database_url is None and wanted != [ENGINES_QUEUE]:
        output.console.print(
            f"[yellow]The state is the SQLite file {settings.state_path}: only processes on this machine with this run "
            "directory share it. For workers on several machines set IMAGING_AGENT_DATABASE_URL (PostgreSQL).[/yellow]"
        )
    if settings.work_dir is None:
        output.console.print(
            f"[yellow]The work store is {settings.work_root}, this machine's own: a job prepared elsewhere cannot resume "
            "here. For workers on several machines set IMAGING_AGENT_WORK_DIR to a folder all of them mount.[/yellow]"
        )
    if metrics_port is not None:
        from agent.workers.metrics import serve_worker_metrics

        # Before the tasks (and the pipeline's figures with them) are imported: multiprocess mode.
        serve_worker_metrics(settings.run_dir / "worker-metrics" / (name or "worker"), metrics_host, metrics_port)
    from agent.workers.tasks import register_tasks

    register_tasks(app, settings)
    argv = [
        "worker",
        f"--queues={','.join(wanted)}",
        f"--concurrency={concurrency}",
        "--loglevel=INFO",
        # Workers need not know each other: the jobs table and the leases coordinate them.
        "--without-mingle",
        "--without-gossip",
    ]
    if name:
        argv.append(f"--hostname={name}@%h")
    app.worker_main(argv)
