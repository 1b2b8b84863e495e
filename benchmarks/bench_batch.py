"""Batch throughput: phantom studies through a private PACS + FHIR server with the built-in engine.

    .venv/bin/python benchmarks/bench_batch.py [--studies N] [--concurrency C] [--phantom-slices S]

Starts its own Orthanc and FHIR server on free ports in a temporary folder (the user's services
are not touched), seeds N phantom studies (default 8, the default phantom spec: 120 x 512 x 512),
then runs the batch over the work list at concurrency C (default 2) until every study waits for
approval, and approves the cards one at a time, as a radiologist would. Reported:

- per study, fetch to approval card: from the study's first step (read the ImagingStudy, open the
  Task) to its approval card, from the graph's progress events;
- per study, decision to written: the `decide` call for that one card, STOW-RS of exactly the
  approved bytes, read-back and hash, and the FHIR transaction;
- studies/day on this box: N studies over (batch wall + every decision's wall), times 86,400;
- peak RSS of this (agent) process over the batch and the writes (VmHWM reset after seeding),
  and of the Orthanc and FHIR server processes.

Seeding is not timed. Run it with another checkout first on PYTHONPATH to measure that one.
Writes benchmarks/results/batch.md (git-ignored). Speed is measured here, never asserted in a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import services
from agent.runtime import AgentRuntime
from agent.seed import seed_datasets
from agent.settings import PROJECT_ROOT, Settings
from tools.identity.principal import Principal
from tools.imaging.volume import read_series_dir
from tools.phantom import PhantomSpec, make_phantom, write_phantom
from tools.workflow.approval import ApprovalDecision

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "batch.md"
ENGINE = "lung-threshold"
REVIEWER = Principal(
    id="dr-bench",
    display_name="Dr. Bench",
    issuer="urn:imaging-agent:benchmark",
    roles=frozenset({"radiologist"}),
    auth_time=datetime.now(UTC),
    auth_method="password",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _vm_hwm_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("/proc/<pid>/status has no VmHWM; this benchmark needs Linux")


@contextmanager
def private_services(run_dir: Path, concurrency: int) -> Iterator[tuple[Settings, dict[str, int]]]:
    """Orthanc and the FHIR server on free ports under `run_dir`; stopped (by their pids) afterwards."""
    settings = Settings(
        run_dir=run_dir,
        orthanc_http_port=_free_port(),
        orthanc_dicom_port=_free_port(),
        orthanc_password=secrets.token_urlsafe(16),
        fhir_port=_free_port(),
        batch_concurrency=concurrency,
        default_engine=ENGINE,
        _env_file=None,
    )
    try:
        rows = services.up(settings)
        yield settings, {row.name: row.pid for row in rows if row.pid}
    finally:
        services.down(settings)


def seed(settings: Settings, folder: Path, count: int, slices: int) -> None:
    for n in range(count):
        spec = PhantomSpec(slices=slices, seed=100 + n, patient_id=f"BENCH-{n:04d}")
        directory = folder / spec.patient_id
        write_phantom(make_phantom(spec), directory)
        seed_datasets(settings, read_series_dir(directory))


def run_batch(settings: Settings) -> dict[str, Any]:
    """The batch to its approval cards, then each card approved alone; times and peaks."""
    events: dict[str, list[tuple[str, float]]] = {}  # study -> (stage, when it started), in order

    def on_progress(event: dict[str, Any]) -> None:
        study, stage = event.get("imaging_study_id"), event.get("stage")
        if study and stage:
            events.setdefault(study, []).append((stage, time.perf_counter()))

    Path("/proc/self/clear_refs").write_text("5")  # peak from here on: the batch, not the seeding
    with AgentRuntime(settings) as runtime:
        started = time.perf_counter()
        report = runtime.start_batch({"status": "registered", "modality": "CT"}, on_progress=on_progress)
        batch_s = time.perf_counter() - started
        batch_peak_mb = _vm_hwm_mb()
        written: list[float] = []
        outcomes: list[str] = []
        for pending in report.pending:
            started = time.perf_counter()
            after = runtime.decide(report.thread_id, {pending.interrupt_id: ApprovalDecision.by(REVIEWER, "approve")})
            written.append(time.perf_counter() - started)
            outcomes = [o["outcome"] for o in after.outcomes]
    return {
        "cards": len(report.pending),
        "outcomes": outcomes,
        "batch_s": batch_s,
        "to_card_s": [_between(steps, "start", "approval") for steps in events.values()],
        "stage_s": _stage_seconds(events, until="approval"),
        "written_s": written,
        "batch_peak_mb": batch_peak_mb,
        "peak_mb": _vm_hwm_mb(),
    }


def _between(steps: list[tuple[str, float]], first: str, last: str) -> float:
    when = dict(steps)
    return when[last] - when[first]


def _stage_seconds(events: dict[str, list[tuple[str, float]]], until: str) -> dict[str, list[float]]:
    """Per stage before `until`, each study's seconds from its start to the next stage's start."""
    seconds: dict[str, list[float]] = {}
    for steps in events.values():
        for (stage, began), (_, ended) in zip(steps, steps[1:]):
            if stage == until:
                break
            seconds.setdefault(stage, []).append(ended - began)
    return seconds


def report(args: argparse.Namespace, result: dict[str, Any], service_peaks: dict[str, float]) -> str:
    total_s = result["batch_s"] + sum(result["written_s"])
    to_card, written = result["to_card_s"], result["written_s"]
    code = Path(sys.modules["agent"].__file__ or "").resolve().parents[1]
    lines = [
        "# Batch benchmark",
        "",
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}; code from {code}; engine `{ENGINE}`.",
        "",
        f"{args.studies} phantom studies ({args.phantom_slices} x 512 x 512), batch concurrency {args.concurrency}; "
        f"{result['cards']} approval cards; outcomes: "
        + ", ".join(f"{o} {result['outcomes'].count(o)}" for o in sorted(set(result["outcomes"]))),
        "",
        "| measure | value |",
        "|---|---:|",
        f"| batch to all approval cards (wall, s) | {result['batch_s']:.1f} |",
        f"| per study, fetch to approval card (s): median / max | {statistics.median(to_card):.1f} / {max(to_card):.1f} |",
        f"| per study, decision to written (s): median / max | {statistics.median(written):.2f} / {max(written):.2f} |",
        f"| all decisions to written (s, one card at a time) | {sum(written):.1f} |",
        f"| seconds per study (batch + decisions) / N | {total_s / args.studies:.2f} |",
        f"| **studies/day** (86,400 / seconds per study) | **{86400 * args.studies / total_s:,.0f}** |",
        f"| peak RSS, agent process, batch (MB) | {result['batch_peak_mb']:.0f} |",
        f"| peak RSS, agent process, batch + writes (MB) | {result['peak_mb']:.0f} |",
        *(f"| peak RSS, {name} process (MB) | {mb:.0f} |" for name, mb in service_peaks.items()),
        "",
        f"Stages before the card, per study (wall from the stage's progress event to the next; two studies "
        f"share the {os.cpu_count()} CPUs at concurrency {args.concurrency}):",
        "",
        "| stage | median (s) | max (s) |",
        "|---|---:|---:|",
        *(f"| {stage} | {statistics.median(v):.2f} | {max(v):.2f} |" for stage, v in result["stage_s"].items()),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--phantom-slices", type=int, default=PhantomSpec().slices)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        with private_services(Path(tmp) / "run", args.concurrency) as (settings, pids):
            print(f"seeding {args.studies} phantom studies ...", file=sys.stderr, flush=True)
            seed(settings, Path(tmp) / "phantoms", args.studies, args.phantom_slices)
            print("running the batch ...", file=sys.stderr, flush=True)
            result = run_batch(settings)
            service_peaks = {name: _vm_hwm_mb(pid) for name, pid in pids.items()}
    text = report(args, result, service_peaks)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
