"""Time and peak memory of each stage of the offline `contour` pipeline, and our RTSTRUCT
writer against rt-utils 1.2.7 on the same lung masks.

    .venv/bin/python benchmarks/bench_contour.py [--lidc DIR] [--cli-runs N]

Cases: the synthetic phantom at its default spec (written to a temporary folder first) and a
real chest CT (default ../shared/data/lidc-idri-0001/dicom). Each case runs in a fresh
Python process, so one case's memory and warm caches never leak into the next. Peak RSS per
stage is the kernel's VmHWM of that process, reset just before the stage by writing "5" to
/proc/self/clear_refs (Linux >= 4.0): it is the most resident memory the process held while
the stage ran, data from earlier stages included. Where the reset is refused, the figure is
the process peak so far, and the table says so.

Last, the whole `imaging-agent contour` command runs as a subprocess (import time included);
its wall time and its own ru_maxrss come from os.wait4.

The markdown table is printed and written to benchmarks/results/contour.md (git-ignored).
Speed is measured here, never asserted in a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LIDC = PROJECT_ROOT.parent / "shared" / "data" / "lidc-idri-0001" / "dicom"
RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "contour.md"
DCIODVFY = Path("/usr/bin/dciodvfy")
COMMAND = Path(sys.executable).with_name("imaging-agent")
ENGINE = "lung-threshold"
# Stages the `contour` command itself runs; contour extraction also happens inside RTSTRUCT.
PIPELINE = ("read + assemble", "segment", "measure + QA", "RTSTRUCT", "SEG", "SR", "previews")
COMPARISON_REPEATS = 3


# ---------------------------------------------------------------- memory and time, in a worker


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"/proc/self/status has no {field}; this harness needs Linux")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel or a sandbox refuses it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Stages:
    """Records seconds and the process's peak RSS during each named stage."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.peak_resettable = True

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.peak_resettable = _reset_peak() and self.peak_resettable
        start_mb = _status_mb("VmRSS")
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        self.rows.append({"stage": name, "seconds": seconds, "peak_mb": _status_mb("VmHWM"), "start_mb": start_mb})


def _dciodvfy_error_count(path: Path) -> int:
    """Lines of dciodvfy's report containing "Error" (the rule the tests apply)."""
    if not DCIODVFY.is_file():
        raise SystemExit(f"{DCIODVFY} not found: install Debian's dicom3tools (apt-get install dicom3tools)")
    run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, check=False)
    return sum("Error" in line for line in (run.stdout + run.stderr).splitlines())


def _median_seconds(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def worker(dicom_dir: Path, work_dir: Path) -> dict[str, Any]:
    """One case in this (fresh) process: every stage, then the RTSTRUCT comparison."""
    stages = Stages()
    with stages.stage("import modules"):
        import numpy as np

        from tools.imaging.preflight import preflight
        from tools.imaging.volume import assemble_volume, group_by_series, read_series_dir
        from tools.results.common import dataset_bytes
        from tools.results.contours import mask_to_contours
        from tools.results.previews import render_previews
        from tools.results.rtstruct import build_rtstruct
        from tools.results.seg import build_seg
        from tools.results.sr import build_sr
        from tools.segmentation.catalog import EngineCatalog
        from tools.segmentation.qa import assess

    def save(ds: Any, name: str) -> None:
        (work_dir / name).write_bytes(dataset_bytes(ds))

    with stages.stage("read + assemble"):
        series = group_by_series(read_series_dir(dicom_dir))
        if len(series) != 1:
            raise SystemExit(f"{dicom_dir} holds {len(series)} series; the benchmark needs exactly one")
        source = next(iter(series.values()))
        volume = assemble_volume(source)
        preflight(volume)
    engine = EngineCatalog().get(ENGINE)
    with stages.stage("segment"):
        result = engine.segment(volume, ["lungs"])
    with stages.stage("measure + QA"):
        result = assess(volume, result)
        volumes_ml = {s.structure.key: s.measurements.volume_ml for s in result.structures if s.measurements}
    with stages.stage("contour extraction"):
        contour_count = sum(len(mask_to_contours(s.mask, volume.geometry)) for s in result.structures)
    with stages.stage("RTSTRUCT"):
        save(build_rtstruct(source, volume, result)[0], "rtstruct.dcm")
    with stages.stage("SEG"):
        seg = build_seg(source, volume, result)[0]
        save(seg, "seg.dcm")
    with stages.stage("SR"):
        save(build_sr(source, volume, result, seg, volumes_ml)[0], "sr.dcm")
    with stages.stage("previews"):
        render_previews(volume, result, work_dir / "previews")

    # Our writer vs rt-utils on the very same masks; rt-utils wants (rows, columns, slices)
    # with slices ordered along the normal, as assemble_volume orders them.
    ours_path, theirs_path = work_dir / "ours-rtstruct.dcm", work_dir / "rt-utils-rtstruct.dcm"
    ours_s = _median_seconds(lambda: save(build_rtstruct(source, volume, result)[0], ours_path.name), COMPARISON_REPEATS)
    from rt_utils import RTStructBuilder

    read_times, write_times = [], []
    for _ in range(COMPARISON_REPEATS):
        started = time.perf_counter()
        builder = RTStructBuilder.create_new(dicom_series_path=str(dicom_dir))
        read_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        for s in result.structures:
            builder.add_roi(
                mask=np.ascontiguousarray(s.mask.transpose(1, 2, 0)),
                name=s.structure.roi_name,
                color=list(s.structure.color_rgb),
            )
        builder.save(str(theirs_path))
        write_times.append(time.perf_counter() - started)
    return {
        "shape": list(volume.array.shape),
        "spacing_mm": [round(v, 3) for v in volume.geometry.spacing],
        "contours": contour_count,
        "volumes_ml": volumes_ml,
        "stages": stages.rows,
        "peak_resettable": stages.peak_resettable,
        "comparison": {
            "ours_s": ours_s,
            "ours_errors": _dciodvfy_error_count(ours_path),
            "ours_mb": ours_path.stat().st_size / 1e6,
            "rt_utils_read_s": statistics.median(read_times),
            "rt_utils_s": statistics.median(write_times),
            "rt_utils_errors": _dciodvfy_error_count(theirs_path),
            "rt_utils_mb": theirs_path.stat().st_size / 1e6,
        },
    }


# ---------------------------------------------------------------- the parent: cases and report


def run_case(dicom_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-contour-") as tmp:
        result_path = Path(tmp) / "result.json"
        run = subprocess.run(
            [sys.executable, __file__, "--worker", str(dicom_dir), "--work", tmp, "--result", str(result_path)],
            capture_output=True, text=True, check=False,
        )
        if run.returncode != 0:
            raise SystemExit(f"benchmark worker failed on {dicom_dir}:\n{run.stdout}{run.stderr}")
        return json.loads(result_path.read_text())


def run_command(dicom_dir: Path, runs: int) -> tuple[list[float], float]:
    """Wall seconds of each `imaging-agent contour` run, and the largest peak RSS (MB) among them."""
    walls: list[float] = []
    peak_mb = 0.0
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-contour-cli-") as tmp:
            log = Path(tmp) / "stderr.txt"
            with log.open("w") as stderr:
                started = time.perf_counter()
                process = subprocess.Popen(
                    [str(COMMAND), "contour", str(dicom_dir), "-o", str(Path(tmp) / "out"), "--engine", ENGINE],
                    stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp,
                )
                # wait4 rather than wait: it also gives this child's own resource usage.
                _, status, usage = os.wait4(process.pid, 0)
                walls.append(time.perf_counter() - started)
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                raise SystemExit(f"`imaging-agent contour {dicom_dir}` failed ({process.returncode}):\n{log.read_text()}")
            peak_mb = max(peak_mb, usage.ru_maxrss / 1024.0)  # Linux reports kilobytes
    return walls, peak_mb


def stage_table(case: dict[str, Any]) -> list[str]:
    by_name = {row["stage"]: row for row in case["stages"]}
    lines = ["| stage | seconds | peak RSS (MB) | RSS at start (MB) |", "|---|---:|---:|---:|"]
    for row in case["stages"]:
        name = row["stage"] + (" (also inside RTSTRUCT; not in total)" if row["stage"] == "contour extraction" else "")
        lines.append(f"| {name} | {row['seconds']:.3f} | {row['peak_mb']:.0f} | {row['start_mb']:.0f} |")
    total_s = sum(by_name[name]["seconds"] for name in PIPELINE)
    total_mb = max(row["peak_mb"] for row in case["stages"])
    lines.append(f"| **total** ({' + '.join(PIPELINE)}) | **{total_s:.3f}** | **{total_mb:.0f}** | |")
    return lines


def report(cases: dict[str, dict[str, Any]], commands: dict[str, tuple[list[float], float]]) -> str:
    resettable = all(case["peak_resettable"] for case in cases.values())
    lines = [
        "# Contour pipeline benchmark",
        "",
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}; engine `{ENGINE}`.",
        "",
        "Peak RSS: VmHWM of a fresh process per case, "
        + ("reset before each stage (the most memory held during that stage, earlier data included)."
           if resettable else "NOT resettable here: each figure is the process peak up to the end of that stage."),
    ]
    for label, case in cases.items():
        volumes = ", ".join(f"{key} {ml:.0f} mL" for key, ml in case["volumes_ml"].items())
        lines += [
            "",
            f"## {label}",
            "",
            f"{case['shape'][0]} slices of {case['shape'][1]}x{case['shape'][2]}, spacing "
            f"{' x '.join(str(v) for v in case['spacing_mm'])} mm (column, row, slice); "
            f"{case['contours']} contours; {volumes}.",
            "",
            *stage_table(case),
        ]
    lines += [
        "",
        f"## RTSTRUCT: our writer vs rt-utils 1.2.7 (same masks; median of {COMPARISON_REPEATS})",
        "",
        "| case | writer | seconds | file (MB) | dciodvfy errors |",
        "|---|---|---:|---:|---:|",
    ]
    for label, case in cases.items():
        c = case["comparison"]
        lines += [
            f"| {label} | ours: build + write | {c['ours_s']:.3f} | {c['ours_mb']:.1f} | {c['ours_errors']} |",
            f"| {label} | rt-utils: add_roi + save | {c['rt_utils_s']:.3f} | {c['rt_utils_mb']:.1f} | {c['rt_utils_errors']} |",
            f"| {label} | (rt-utils reading the series itself, not counted) | {c['rt_utils_read_s']:.3f} | | |",
            f"| {label} | **speed-up** (rt-utils add_roi + save / ours) | **{c['rt_utils_s'] / c['ours_s']:.1f}x** | | |",
        ]
    lines += [
        "",
        "## The whole `imaging-agent contour` command (subprocess wall time, imports included)",
        "",
        "| case | runs (s) | median (s) | peak RSS (MB) |",
        "|---|---|---:|---:|",
    ]
    for label, (walls, peak_mb) in commands.items():
        runs = ", ".join(f"{w:.2f}" for w in walls)
        lines.append(f"| {label} | {runs} | {statistics.median(walls):.2f} | {peak_mb:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lidc", type=Path, default=DEFAULT_LIDC, help="folder with the LIDC-IDRI-0001 CT series")
    parser.add_argument("--cli-runs", type=int, default=3, help="runs of the whole command per case")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        args.result.write_text(json.dumps(worker(args.worker, args.work)))
        return

    if not args.lidc.is_dir():
        raise SystemExit(f"LIDC series not found at {args.lidc}; pass its folder with --lidc DIR")
    from tools.phantom import PhantomSpec, make_phantom, write_phantom

    spec = PhantomSpec()
    with tempfile.TemporaryDirectory(prefix="bench-phantom-") as tmp:
        phantom_dir = Path(tmp) / "ct"
        write_phantom(make_phantom(spec), phantom_dir)
        sources = {
            f"phantom ({spec.slices}x{spec.rows}x{spec.columns}, default spec)": phantom_dir,
            "LIDC-IDRI-0001": args.lidc,
        }
        cases: dict[str, dict[str, Any]] = {}
        commands: dict[str, tuple[list[float], float]] = {}
        for label, directory in sources.items():
            print(f"benchmarking {label} ...", file=sys.stderr, flush=True)
            cases[label] = run_case(directory)
            commands[label] = run_command(directory, args.cli_runs)
    text = report(cases, commands)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
