"""The DICOM node's receive throughput against Orthanc's own C-STORE receive, and the time from the
last instance to the approval card.

    .venv/bin/python benchmarks/bench_intake.py [--dicom DIR] [--runs N]

Starts private services on free ports in a temporary folder (Orthanc with its DICOM port on, the
FHIR server; the user's services are not touched) and the agent's node in this process. Each run
pushes a fresh copy of the series (new UIDs) with dcmtk's storescu, alternately to Orthanc and to
the node, and reports medians: seconds, MB/s, instances/s. Then the node's intake takes the last
copy into work (stable age 0): route, store in the PACS, register in FHIR, run the study job to its
approval card, timed from the end of the push. Writes benchmarks/results/intake.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from agent.intake import Intake, storage_node
from agent.runtime import AgentRuntime
from agent.services import down, up
from agent.services.process import free_port
from agent.settings import PROJECT_ROOT, Settings
from tools.dimse.peers import Peer
from tools.intake.inbox import Inbox

RESULTS = PROJECT_ROOT / "benchmarks" / "results"


def _copy(source: list[Path], folder: Path) -> list[Path]:
    """The series under new Study, Series and SOP Instance UIDs (Orthanc would skip known instances)."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    out = []
    for index, path in enumerate(source):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        target = folder / f"{index:04d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        out.append(target)
    return out


def _push(storescu: str, calling: str, called: str, port: int, files: list[Path]) -> float:
    started = time.perf_counter()
    subprocess.run([storescu, "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dicom", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "lidc-idri-0001" / "dicom")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    storescu = shutil.which("storescu")
    if storescu is None:
        raise SystemExit("dcmtk's storescu is missing: run scripts/bootstrap.sh")
    source = sorted(args.dicom.glob("*.dcm")) or sorted(p for p in args.dicom.iterdir() if p.is_file())
    megabytes = sum(p.stat().st_size for p in source) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(
            run_dir=root / "run", orthanc_http_port=free_port(), orthanc_dicom_port=free_port(), fhir_port=free_port(),
            orthanc_dicom_enabled=True, intake_stable_age_s=0.001, _env_file=None,
        )
        settings = settings.model_copy(update={"intake_peers": [Peer(ae_title="BENCH_SCU", host="127.0.0.1")]})
        up(settings)
        inbox = Inbox(settings.intake_dir)
        node = storage_node(settings, inbox)
        node_port = node.start("127.0.0.1", 0)
        timings: dict[str, list[float]] = {"Orthanc C-STORE receive": [], "imaging-agent node": []}
        try:
            copies = [_copy(source, root / f"copy-{run}") for run in range(args.runs)]
            for files in copies:
                timings["Orthanc C-STORE receive"].append(
                    _push(storescu, settings.dimse_calling_aet, settings.orthanc_aet, settings.orthanc_dicom_port, files)
                )
                timings["imaging-agent node"].append(_push(storescu, "BENCH_SCU", settings.intake_ae_title, node_port, files))
            # Only the last copy goes on into work: the earlier ones are set aside unprocessed.
            for series in inbox.series()[:-1]:
                inbox.take(series, "benchmark: receive only")
            with AgentRuntime(settings) as runtime:
                last = copies[-1]
                started = time.perf_counter()
                _push(storescu, "BENCH_SCU", settings.intake_ae_title, node_port, last)
                pushed = time.perf_counter()
                events = []
                while not events:
                    events = [e for e in Intake(settings, runtime, inbox).poll() if e.job_thread_id or e.error]
                card = time.perf_counter()
                assert events[0].error is None and events[0].pending_approvals == 1, events
        finally:
            node.stop()
            down(settings)
    lines = [
        f"Series: {args.dicom} ({len(source)} files, {megabytes:.1f} MB), {args.runs} alternating runs, medians",
        "",
        "| receiver | seconds | MB/s | instances/s |",
        "|---|---|---|---|",
    ]
    for name, runs in timings.items():
        median = statistics.median(runs)
        lines.append(f"| {name} | {median:.2f} | {megabytes / median:.0f} | {len(source) / median:.0f} |")
    lines += [
        "",
        f"Re-push of the last copy to the node (duplicates): {pushed - started:.2f} s; from the end of that push "
        f"to the approval card (route, STOW to the PACS, FHIR registration, study job): {card - pushed:.2f} s",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "intake.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
