"""STOW-RS, WADO-RS and DIMSE C-STORE throughput against a private local Orthanc.

    .venv/bin/python benchmarks/bench_transfer.py [--dicom DIR]

Starts its own Orthanc on free ports in a temporary folder (the user's services are not
touched), stores the series each way into a fresh Orthanc, and prints MB/s. Also times volume
assembly. Writes benchmarks/results/transfer.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from agent.parts import dimse_client, pacs_client
from agent.services import process
from agent.services.local import orthanc_spec
from agent.services.process import free_port
from agent.settings import PROJECT_ROOT, Settings
from tools.dicomweb.stow import part10_bytes
from tools.imaging.volume import assemble_volume, read_series_dir

RESULTS = PROJECT_ROOT / "benchmarks" / "results"


def _fresh_orthanc(run_dir: Path) -> tuple[Settings, object]:
    settings = Settings(
        run_dir=run_dir,
        orthanc_http_port=free_port(),
        orthanc_dicom_port=free_port(),
        orthanc_dicom_enabled=True,  # off by default; C-STORE is measured here
        _env_file=None,
    )
    spec = orthanc_spec(settings)
    process.start(spec, 60)
    return settings, spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dicom", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "lidc-idri-0001" / "dicom")
    args = parser.parse_args()
    datasets = read_series_dir(args.dicom)
    megabytes = sum(len(part10_bytes(ds)) for ds in datasets) / 1e6
    started = time.perf_counter()
    volume = assemble_volume(datasets)
    assemble_s = time.perf_counter() - started
    study, series = volume.study_instance_uid, volume.series_instance_uid
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("STOW-RS", "C-STORE"):
            settings, spec = _fresh_orthanc(Path(tmp) / name)
            try:
                started = time.perf_counter()
                if name == "STOW-RS":
                    with pacs_client(settings) as pacs:
                        result = pacs.store(datasets)
                else:
                    result = dimse_client(settings).store(datasets)
                assert not result.failed, result.failed
                rows.append((name, time.perf_counter() - started))
                if name == "STOW-RS":
                    with pacs_client(settings) as pacs:
                        started = time.perf_counter()
                        pacs.retrieve_series(study, series)
                        rows.append(("WADO-RS", time.perf_counter() - started))
            finally:
                process.stop(spec)
    lines = [
        f"Series: {args.dicom} ({len(datasets)} files, {megabytes:.1f} MB); volume assembly {assemble_s:.2f} s",
        "",
        "| path | seconds | MB/s |",
        "|---|---|---|",
        *[f"| {name} | {seconds:.2f} | {megabytes / seconds:.0f} |" for name, seconds in rows],
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transfer.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
