"""Studies per hour with 1 and 2 `imaging-agent worker` processes on loopback, through PACS and FHIR.

    .venv/bin/python benchmarks/bench_scale.py [--studies N]

Starts its own Orthanc, FHIR server, PostgreSQL and Redis (`services up --scale` in a temporary run
directory, free ports), seeds N phantom studies per round (60 x 256 x 256, as the workflow tests),
queues one batch per round through the runtime as the API does, approves each study as soon as its
approval appears (an automatic principal), and waits for the batch to end. Both workers share this
machine, so they contend for its cores: CPU seconds per study are reported beside the wall clock.

Per round: wall seconds, studies/hour, CPU seconds per study (all worker processes), peak RSS per
worker, queue latency (job queued -> its first stage on a worker; decision -> its resume on a
worker), median seconds per step from the workers' logs. Once: the broker's message sizes, read
back from Redis. Writes benchmarks/results/scale.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import redis
from pydantic import SecretStr

from agent import services
from agent.runtime import AgentRuntime
from agent.seed import seed_datasets
from agent.services.process import free_port
from agent.settings import PROJECT_ROOT, Settings
from agent.workers.celery_app import build_celery_app
from agent.workers.queue import CeleryJobQueue
from tools.identity.principal import Principal
from tools.imaging.volume import read_series_dir
from tools.phantom import PhantomSpec, make_phantom, write_phantom
from tools.workflow.approval import ApprovalDecision

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
CLI = Path(sys.executable).parent / "imaging-agent"
_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/[^\]]+\] job (\S+): (?:study \S+ (\w+)|(done):)", re.M)
STEPS = ["start", "fetch", "assemble", "preflight", "segment", "build", "write_pacs", "write_fhir"]


def _settings(base: Path) -> Settings:
    return Settings(
        run_dir=base / "run",
        orthanc_http_port=free_port(),
        orthanc_dicom_port=free_port(),
        fhir_port=free_port(),
        postgres_port=free_port(),
        redis_port=free_port(),
        _env_file=None,
    )


def _env(settings: Settings, run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGING_AGENT_")}
    auth = settings.dicomweb_http_auth()
    env.update(
        IMAGING_AGENT_RUN_DIR=str(run_dir),
        IMAGING_AGENT_DICOMWEB_URL=settings.dicomweb_url,
        IMAGING_AGENT_DICOMWEB_AUTH=auth.kind,
        IMAGING_AGENT_DICOMWEB_USERNAME=auth.username or "",
        IMAGING_AGENT_DICOMWEB_PASSWORD=auth.password.get_secret_value() if auth.password else "",
        IMAGING_AGENT_FHIR_URL=settings.fhir_url,
        IMAGING_AGENT_DATABASE_URL=settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        IMAGING_AGENT_BROKER_URL=settings.broker_url.get_secret_value(),  # type: ignore[union-attr]
        IMAGING_AGENT_WORK_DIR=str(settings.work_root),
    )
    return env


def _seed(settings: Settings, folder: Path, count: int, patient_id: str) -> str:
    reference = ""
    for n in range(count):
        spec = PhantomSpec(slices=60, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0,
                           seed=n, patient_id=patient_id)
        write_phantom(make_phantom(spec), folder / str(n))
        [seeded] = seed_datasets(settings, read_series_dir(folder / str(n)))
        reference = f"Patient/{seeded.patient_resource_id}"
    return reference


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                continue
    return pids


def _cpu_and_peak_rss(pgid: int) -> tuple[float, float]:
    """CPU seconds of every process of a worker (its pool included) and the largest peak RSS, in MB."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu, peak = 0.0, 0.0
    for pid in _group(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu += (int(fields[11]) + int(fields[12])) / ticks
        hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
        peak = max(peak, int(hwm.group(1)) / 1024 if hwm else 0.0)
    return cpu, peak


def _log_events(log: Path) -> list[tuple[float, str, str]]:
    """(epoch seconds, job, stage or "done") from a worker's log (its lines are in local time)."""
    events = []
    for stamp, job, stage, done in _LINE.findall(log.read_text(errors="replace")):
        when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").astimezone(UTC).timestamp()
        events.append((when, job, stage or done))
    return events


def _message_sizes(settings: Settings) -> dict[str, int]:
    """Bytes of each message as Redis holds it, sent to a queue nobody reads yet."""
    queue = CeleryJobQueue(build_celery_app(settings))
    broker = redis.Redis.from_url(settings.broker_url.get_secret_value())  # type: ignore[union-attr]
    sizes = {}
    for name, send in [
        ("start_study", lambda: queue.start_study("study-20260101-000000-abcdef", str(uuid.uuid4()), "lung-threshold")),
        ("start_batch", lambda: queue.start_batch(
            "batch-20260101-000000-abcdef", {"status": "registered", "modality": "CT", "subject": f"Patient/{uuid.uuid4()}"},
            "lung-threshold")),
        ("resume", lambda: queue.resume("study-20260101-000000-abcdef")),
    ]:
        send()
        [raw] = broker.lrange("studies", 0, -1)
        sizes[name] = len(raw)
        broker.delete("studies")
    return sizes


def _round(settings: Settings, base: Path, workers: int, studies: int) -> dict[str, object]:
    patient = f"BENCH-{workers}-{uuid.uuid4().hex[:6]}"
    subject = _seed(settings, base / f"phantoms-{workers}", studies, patient)
    logs = [base / f"round-{workers}-w{n}.log" for n in range(workers)]
    procs = []
    for n, log in enumerate(logs):
        with log.open("w") as out:
            procs.append(subprocess.Popen(
                [str(CLI), "worker", "--name", f"bench{n}", "--concurrency", "1"],
                env=_env(settings, base / f"worker-{workers}-{n}" / "run"), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            ))
    try:
        deadline = time.monotonic() + 120
        while not all(" ready." in log.read_text() for log in logs):
            assert time.monotonic() < deadline, "workers not ready in 120 s"
            time.sleep(0.2)
        reviewer = Principal(id="benchmark", display_name="Benchmark", issuer="urn:imaging-agent:benchmark",
                             roles=frozenset({"radiologist"}), auth_time=datetime.now(UTC), auth_method="automatic")
        decided_at: dict[str, float] = {}
        with AgentRuntime(settings) as runtime:
            started = time.monotonic()
            batch = runtime.start_batch({"status": "registered", "modality": "CT", "subject": subject}).thread_id
            while True:
                report = runtime.report(batch)
                if report.done and report.summary and report.summary.get("studies") == studies:
                    break
                for pending in report.pending:
                    decision = ApprovalDecision.by(reviewer, "approve", automatic=True)
                    runtime.decide(pending.thread_id, {pending.interrupt_id: decision})
                    decided_at[pending.thread_id] = time.time()
                assert time.monotonic() - started < 1800, "the round took over 30 minutes"
                time.sleep(0.2)
            wall = time.monotonic() - started
            created = {j.thread_id: datetime.fromisoformat(j.created_at).timestamp() for j in runtime.jobs()}
            outcomes = [o["outcome"] for o in report.outcomes]
        usage = [_cpu_and_peak_rss(p.pid) for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
    events = sorted(e for log in logs for e in _log_events(log))
    step_seconds: dict[str, list[float]] = defaultdict(list)
    first_stage: dict[str, float] = {}
    resumed: dict[str, float] = {}
    by_job: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for when, job, stage in events:
        by_job[job].append((when, stage))
    for job, seq in by_job.items():
        first_stage.setdefault(job, seq[0][0])
        for (when, stage), (after, _next) in zip(seq, seq[1:]):
            if stage in STEPS:
                step_seconds[stage].append(after - when)
        after_decision = [when for when, stage in seq if stage == "approval" and when >= decided_at.get(job, float("inf")) - 0.01]
        if after_decision:
            resumed[job] = after_decision[0] - decided_at[job]
    start_latency = [first_stage[j] - created[j] for j in first_stage if j in created]
    return {
        "workers": workers,
        "studies": studies,
        "completed": outcomes.count("completed"),
        "wall_s": wall,
        "per_hour": studies / wall * 3600,
        "cpu_per_study_s": sum(cpu for cpu, _ in usage) / studies,
        "peak_rss_mb": [rss for _, rss in usage],
        "start_latency_s": statistics.median(start_latency) if start_latency else float("nan"),
        "resume_latency_s": statistics.median(resumed.values()) if resumed else float("nan"),
        "steps": {s: statistics.median(v) for s, v in step_seconds.items() if v},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=6, help="studies per round (default 6)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="imaging-agent-bench-scale-"))
    base.chmod(0o711)  # PostgreSQL's system user passes through to run/postgres
    settings = _settings(base)
    try:
        services.up(settings, scale=True)
        settings = settings.model_copy(update={
            "database_url": SecretStr(services.database_url_file(settings).read_text().strip()),
            "broker_url": SecretStr(services.broker_url_file(settings).read_text().strip()),
            "work_dir": base / "work-store",
        })
        sizes = _message_sizes(settings)
        rounds = [_round(settings, base, n, args.studies) for n in (1, 2)]
    finally:
        services.down(settings)
    one = rounds[0]["per_hour"]
    lines = [
        f"# bench_scale: {args.studies} phantom studies per round, {os.cpu_count()} CPU cores, {datetime.now(UTC):%Y-%m-%d}",
        "",
        "| workers | completed | wall s | studies/hour | x one worker | CPU s/study | peak RSS per worker MB "
        "| queued -> first step s | decision -> resume s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        lines.append(
            f"| {r['workers']} | {r['completed']}/{r['studies']} | {r['wall_s']:.1f} | {r['per_hour']:.0f} "
            f"| {r['per_hour'] / one:.2f} | {r['cpu_per_study_s']:.2f} | {', '.join(f'{m:.0f}' for m in r['peak_rss_mb'])} "
            f"| {r['start_latency_s']:.2f} | {r['resume_latency_s']:.2f} |"
        )
    lines += ["", "Median seconds per step (from the workers' logs):", "",
              "| workers | " + " | ".join(STEPS) + " |", "|---|" + "---|" * len(STEPS)]
    for r in rounds:
        steps = r["steps"]
        lines.append(f"| {r['workers']} | " + " | ".join(f"{steps.get(s, float('nan')):.2f}" for s in STEPS) + " |")
    lines += ["", "Broker message sizes (bytes as Redis holds them, JSON with headers): "
              + ", ".join(f"{k} {v}" for k, v in sizes.items())]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
