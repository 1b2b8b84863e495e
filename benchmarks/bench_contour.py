"""Time and peak memory of each stage of the offline `contour` pipeline; the whole command
against a plain script (benchmarks/baseline_contour.py); our RTSTRUCT writer against rt-utils
1.2.7 on the same lung masks.

    .venv/bin/python benchmarks/bench_contour.py [--lidc DIR] [--stage-runs N] [--cli-runs N] [--before DIR]

Cases: the synthetic phantom at its default spec (written to a temporary folder first) and a
real chest CT (default ../shared/data/lidc-idri-0001/dicom). Each case runs in a fresh
Python process, so one case's memory and warm caches never leak into the next. Peak RSS per
stage is the kernel's VmHWM of that process, reset just before the stage by writing "5" to
/proc/self/clear_refs (Linux >= 4.0): it is the most resident memory the process held while
the stage ran, data from earlier stages included. Where the reset is refused, the figure is
the process peak so far, and the table says so. The output stages are timed through
build_package's progress callback, so they are exactly what `contour` runs. Each case runs
`--stage-runs` times (alternating between checkouts); the table shows each stage's median
seconds and its largest peak.

Last, whole commands run as subprocesses (import time included), alternating on LIDC: the
plain script, then `imaging-agent contour` (as `python -m agent.cli` with this checkout first on
PYTHONPATH, so the venv's editable install of another checkout does not answer); wall time and
ru_maxrss come from os.wait4. Medians and the ratio to the plain script are reported.

`--before DIR` runs every stage and the command on another checkout too (`git archive main |
tar -x -C DIR`), in the same run: a before/after table under the same load.

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
BASELINE = PROJECT_ROOT / "benchmarks" / "baseline_contour.py"
ENGINE = "lung-threshold"
# build_package's progress stages, as this report names them; report.txt and summary.json are
# written after the previews, before "done".
PACKAGE_STAGES = {"rtstruct": "RTSTRUCT", "seg": "SEG", "sr": "SR", "previews": "previews + report"}
# Stages the `contour` command itself runs; contour extraction also happens inside RTSTRUCT.
PIPELINE = ("import modules", "read + assemble", "segment", "measure + QA", *PACKAGE_STAGES.values())
COMPARISON_REPEATS = 5
THIS, BEFORE = "this checkout", "before"
BASELINE_LABEL = "plain script (benchmarks/baseline_contour.py)"


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

    @contextmanager
    def package(self, names: dict[str, str]) -> Iterator[Callable[[str, float], None]]:
        """A progress callback for build_package: each stage it names runs until the next one starts."""
        current: list[Any] = []  # the open stage's context manager, if any

        def close() -> None:
            if current:
                current.pop().__exit__(None, None, None)

        def progress(stage: str, fraction: float) -> None:
            close()
            if stage in names:
                opened = self.stage(names[stage])
                opened.__enter__()
                current.append(opened)

        try:
            yield progress
        finally:
            close()


def _dciodvfy_error_count(path: Path) -> int:
    """Lines of dciodvfy's report containing "Error" (the rule the tests apply)."""
    if not DCIODVFY.is_file():
        raise SystemExit(f"{DCIODVFY} not found: install Debian's dicom3tools (apt-get install dicom3tools)")
    run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, check=False)
    return sum("Error" in line for line in (run.stdout + run.stderr).splitlines())


def worker(dicom_dir: Path, work_dir: Path, compare: bool) -> dict[str, Any]:
    """One case in this (fresh) process: every stage, then (if `compare`) the RTSTRUCT comparison.

    The stages use only API that every revision since issue 9 has (build_package and its
    progress callback), so `--before DIR` can run them on an older checkout; the comparison
    runs on this checkout only.
    """
    stages = Stages()
    with stages.stage("import modules"):
        # What `imaging-agent contour` imports before it reads a file: the CLI, the job, the engine.
        # The DICOM writers (highdicom, contour extraction) load in the stages that use them: in
        # the command they load in its forked builder, while the parent segments.
        import numpy as np

        import agent.cli  # noqa: F401
        from agent.contour import run_contour  # noqa: F401
        from tools.imaging.preflight import preflight
        from tools.imaging.volume import assemble_volume, group_by_series, read_series_dir
        from tools.results.common import dataset_bytes
        from tools.results.package import build_package
        from tools.segmentation.catalog import EngineCatalog
        from tools.segmentation.qa import assess

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
        from tools.results.contours import mask_to_contours

        contour_count = sum(len(mask_to_contours(s.mask, volume.geometry)) for s in result.structures)
    with stages.package(PACKAGE_STAGES) as progress:
        build_package(source, volume, result, work_dir / "package", progress=progress)
    case = {
        "shape": list(volume.array.shape),
        "spacing_mm": [round(v, 3) for v in volume.geometry.spacing],
        "contours": contour_count,
        "volumes_ml": volumes_ml,
        "stages": stages.rows,
        "peak_resettable": stages.peak_resettable,
    }
    if not compare:
        return case

    # Our writer vs rt-utils on the very same masks; rt-utils wants (rows, columns, slices)
    # with slices ordered along the normal, as assemble_volume orders them.
    ours_path, theirs_path = work_dir / "ours-rtstruct.dcm", work_dir / "rt-utils-rtstruct.dcm"

    # As the package writes it: the dataset, serialised once (only this checkout compares).
    from rt_utils import RTStructBuilder

    from tools.results.rtstruct import rtstruct_dataset

    def ours() -> None:
        ours_path.write_bytes(dataset_bytes(rtstruct_dataset(source, volume, result)))

    read_times, write_times, ours_times = [], [], []
    for _ in range(COMPARISON_REPEATS):  # alternating, so both see the same load on a shared machine
        ours_times.append(_seconds(ours))
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
        **case,
        "comparison": {
            "ours_s": statistics.median(ours_times),
            "ours_errors": _dciodvfy_error_count(ours_path),
            "ours_mb": ours_path.stat().st_size / 1e6,
            "rt_utils_read_s": statistics.median(read_times),
            "rt_utils_s": statistics.median(write_times),
            "rt_utils_errors": _dciodvfy_error_count(theirs_path),
            "rt_utils_mb": theirs_path.stat().st_size / 1e6,
        },
    }


def _seconds(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


# ---------------------------------------------------------------- the parent: cases and report


def _env(root: Path) -> dict[str, str]:
    """The environment that makes `root`'s code win over the venv's editable install."""
    return {**os.environ, "PYTHONPATH": str(root)}


def run_case(dicom_dir: Path, root: Path, compare: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-contour-") as tmp:
        result_path = Path(tmp) / "result.json"
        run = subprocess.run(
            [sys.executable, __file__, "--worker", str(dicom_dir), "--work", tmp, "--result", str(result_path)]
            + (["--compare"] if compare else []),
            capture_output=True, text=True, check=False, env=_env(root), cwd=root,
        )
        if run.returncode != 0:
            raise SystemExit(f"benchmark worker failed on {dicom_dir} with {root}:\n{run.stdout}{run.stderr}")
        return json.loads(result_path.read_text())


def merged(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one case as one: each stage's median seconds and largest peak RSS."""
    first = results[0]
    stages = []
    for row in first["stages"]:
        same = [next(r for r in result["stages"] if r["stage"] == row["stage"]) for result in results]
        stages.append({
            "stage": row["stage"],
            "seconds": statistics.median(r["seconds"] for r in same),
            "peak_mb": max(r["peak_mb"] for r in same),
            "start_mb": statistics.median(r["start_mb"] for r in same),
        })
    return {**first, "stages": stages, "peak_resettable": all(r["peak_resettable"] for r in results)}


def _timed_run(argv: list[str], env: dict[str, str], tmp: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one command."""
    log = tmp / "stderr.txt"
    with log.open("w") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp, env=env)
        # wait4 rather than wait: it also gives this child's own resource usage.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"`{' '.join(argv)}` failed:\n{log.read_text()}")
    return wall, usage.ru_maxrss / 1024.0  # Linux reports kilobytes


def run_commands(commands: dict[str, tuple[list[str], dict[str, str]]], runs: int) -> dict[str, tuple[list[float], float]]:
    """Each command `runs` times, alternating between them so that all see the same load.

    Each argv gets an output path appended. Returns per command its walls and largest peak RSS.
    """
    walls: dict[str, list[float]] = {label: [] for label in commands}
    peaks: dict[str, float] = dict.fromkeys(commands, 0.0)
    for _ in range(runs):
        for label, (argv, env) in commands.items():
            with tempfile.TemporaryDirectory(prefix="bench-contour-cli-") as tmp:
                wall, peak_mb = _timed_run([*argv, str(Path(tmp) / "out")], env, Path(tmp))
            walls[label].append(wall)
            peaks[label] = max(peaks[label], peak_mb)
    return {label: (walls[label], peaks[label]) for label in commands}


def contour_argv(dicom_dir: Path) -> list[str]:
    return [sys.executable, "-m", "agent.cli", "contour", str(dicom_dir), "--engine", ENGINE, "-o"]


def stage_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    """One row per stage, one seconds and one peak RSS column per revision."""
    labels = list(runs)
    by_name = {label: {row["stage"]: row for row in case["stages"]} for label, case in runs.items()}
    lines = [
        "| stage | " + " | ".join(f"{label}: s | {label}: peak MB" for label in labels) + " |",
        "|---|" + "---:|---:|" * len(labels),
    ]
    for row in runs[labels[-1]]["stages"]:
        name = row["stage"] + (" (also inside RTSTRUCT; not in total)" if row["stage"] == "contour extraction" else "")
        cells = [by_name[label].get(row["stage"]) for label in labels]
        lines.append(
            f"| {name} | "
            + " | ".join("- | -" if c is None else f"{c['seconds']:.3f} | {c['peak_mb']:.0f}" for c in cells)
            + " |"
        )
    totals = []
    for label in labels:
        total_s = sum(by_name[label][name]["seconds"] for name in PIPELINE if name in by_name[label])
        totals.append(f"**{total_s:.3f}** | **{max(r['peak_mb'] for r in runs[label]['stages']):.0f}**")
    lines.append(f"| **total** ({' + '.join(PIPELINE)}) | " + " | ".join(totals) + " |")
    return lines


def report(
    cases: dict[str, dict[str, dict[str, Any]]], commands: dict[str, dict[str, tuple[list[float], float]]]
) -> str:
    resettable = all(run["peak_resettable"] for case in cases.values() for run in case.values())
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
    for label, runs in cases.items():
        case = runs[THIS]
        volumes = ", ".join(f"{key} {ml:.0f} mL" for key, ml in case["volumes_ml"].items())
        lines += [
            "",
            f"## {label}",
            "",
            f"{case['shape'][0]} slices of {case['shape'][1]}x{case['shape'][2]}, spacing "
            f"{' x '.join(str(v) for v in case['spacing_mm'])} mm (column, row, slice); "
            f"{case['contours']} contours; {volumes}.",
            "",
            *stage_table(runs),
        ]
    lines += [
        "",
        f"## RTSTRUCT: our writer vs rt-utils 1.2.7 (same masks; median of {COMPARISON_REPEATS}, alternating)",
        "",
        "| case | writer | seconds | file (MB) | dciodvfy errors |",
        "|---|---|---:|---:|---:|",
    ]
    for label, runs in cases.items():
        c = runs[THIS]["comparison"]
        lines += [
            f"| {label} | ours: build + serialise | {c['ours_s']:.3f} | {c['ours_mb']:.1f} | {c['ours_errors']} |",
            f"| {label} | rt-utils: add_roi + save | {c['rt_utils_s']:.3f} | {c['rt_utils_mb']:.1f} | {c['rt_utils_errors']} |",
            f"| {label} | (rt-utils reading the series itself, not counted) | {c['rt_utils_read_s']:.3f} | | |",
            f"| {label} | **speed-up** (rt-utils add_roi + save / ours) | **{c['rt_utils_s'] / c['ours_s']:.1f}x** | | |",
        ]
    lines += [
        "",
        "## Whole commands (subprocess wall time, imports included; runs alternate between the commands)",
        "",
        "| case | command | runs (s) | median (s) | ratio to the plain script | peak RSS (MB) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for label, timings in commands.items():
        baseline = statistics.median(timings[BASELINE_LABEL][0]) if BASELINE_LABEL in timings else None
        for command, (walls, peak_mb) in timings.items():
            runs = ", ".join(f"{w:.2f}" for w in walls)
            median = statistics.median(walls)
            ratio = f"{median / baseline:.2f}x" if baseline else "-"
            lines.append(f"| {label} | {command} | {runs} | {median:.2f} | {ratio} | {peak_mb:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lidc", type=Path, default=DEFAULT_LIDC, help="folder with the LIDC-IDRI-0001 CT series")
    parser.add_argument("--cli-runs", type=int, default=5, help="alternating runs of each whole command on LIDC")
    parser.add_argument("--stage-runs", type=int, default=3, help="alternating stage runs per case and checkout")
    parser.add_argument(
        "--before", type=Path, help="another checkout to compare with, e.g. `git archive main | tar -x -C DIR`"
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--compare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        args.result.write_text(json.dumps(worker(args.worker, args.work, args.compare)))
        return

    if not args.lidc.is_dir():
        raise SystemExit(f"LIDC series not found at {args.lidc}; pass its folder with --lidc DIR")
    revisions = {**({BEFORE: args.before.resolve()} if args.before else {}), THIS: PROJECT_ROOT}
    from tools.phantom import PhantomSpec, make_phantom, write_phantom

    spec = PhantomSpec()
    with tempfile.TemporaryDirectory(prefix="bench-phantom-") as tmp:
        phantom_dir = Path(tmp) / "ct"
        write_phantom(make_phantom(spec), phantom_dir)
        sources = {
            f"phantom ({spec.slices}x{spec.rows}x{spec.columns}, default spec)": phantom_dir,
            "LIDC-IDRI-0001": args.lidc,
        }
        cases: dict[str, dict[str, dict[str, Any]]] = {}
        commands: dict[str, dict[str, tuple[list[float], float]]] = {}
        for label, directory in sources.items():
            print(f"benchmarking {label} ...", file=sys.stderr, flush=True)
            runs: dict[str, list[dict[str, Any]]] = {revision: [] for revision in revisions}
            for n in range(args.stage_runs):  # alternating, so both revisions see the same load
                for revision, root in revisions.items():
                    runs[revision].append(run_case(directory, root, compare=n == 0 and revision == THIS))
            cases[label] = {revision: merged(results) for revision, results in runs.items()}
            argvs = {f"`imaging-agent contour` ({r})": (contour_argv(directory), _env(root)) for r, root in revisions.items()}
            if directory == args.lidc:
                argvs = {BASELINE_LABEL: ([sys.executable, str(BASELINE), str(directory)], dict(os.environ)), **argvs}
            commands[label] = run_commands(argvs, args.cli_runs if directory == args.lidc else 1)
    text = report(cases, commands)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
