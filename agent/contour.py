"""The offline `contour` job: a DICOM folder in, RTSTRUCT / SEG / SR / previews / summary out.

No server is needed. Output is built in a sibling folder and moved into place only when
everything succeeded, so a failure leaves no partial files behind.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tools.imaging.preflight import preflight
from tools.imaging.volume import SeriesRefusedError, assemble_volume, group_by_series, read_series_dir
from tools.results.package import OutputFormat, ResultPackage, build_package, fork_dicom_build
from tools.segmentation.catalog import EngineCatalog
from tools.workflow.segment import segment_with_fallback

Progress = Callable[[str, float], None]


class ContourError(RuntimeError):
    """The contour job cannot finish; the message names the input and what to do."""


def run_contour(
    dicom_dir: Path,
    out_dir: Path,
    engines: EngineCatalog,
    engine_chain: Sequence[str],
    *,
    formats: Sequence[OutputFormat],
    targets: Sequence[str] = ("lungs",),
    overwrite: bool = False,
    progress: Progress | None = None,
) -> tuple[ResultPackage, list[str]]:
    """Contour one local series with the first engine of `engine_chain` that works and passes QA.

    Returns the package written into `out_dir` (atomically: all files or none) and, for each engine
    tried before the one used, why its result was not used.
    """
    report = progress or (lambda stage, fraction: None)
    _check_paths(dicom_dir, out_dir, overwrite)
    if "sr" in formats and "seg" not in formats:
        raise ContourError("the SR references the SEG: ask for 'seg' too, or leave 'sr' out of --formats.")
    started = time.perf_counter()
    report("read", 0.0)
    try:
        datasets = read_series_dir(dicom_dir)
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        raise ContourError(f"cannot read DICOM from {dicom_dir}: {exc}") from exc
    series = group_by_series(datasets)
    if len(series) != 1:
        listing = ", ".join(f"{uid or '(no UID)'} ({len(items)} files)" for uid, items in series.items())
        raise ContourError(
            f"{dicom_dir} holds {len(series)} series ({listing}); point `contour` at a folder with one CT series."
        )
    source = next(iter(series.values()))
    try:
        volume = assemble_volume(source)
        preflight(volume)
    except (SeriesRefusedError, ValueError) as exc:
        raise ContourError(str(exc)) from exc
    # The pixels are in the volume now and the writers read headers only (as the workflow's
    # build step, which reads them without pixels): not held twice.
    for dataset in source:
        del dataset.PixelData
    read_s = time.perf_counter() - started

    report("segment", 0.1)
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        # This command is alone in its process: the second core builds the DICOM objects.
        with fork_dicom_build(source, volume) as dicom:
            result, not_used, _errors = segment_with_fallback(
                engines, volume, engine_chain, targets, assess_last=False
            )
            package = build_package(
                source,
                volume,
                result,
                partial,
                formats=formats,
                progress=lambda stage, fraction: report(stage, 0.5 + fraction / 2),
                dicom=dicom,
            )
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out_dir.exists():
        # Moved aside before deleting: a crash here leaves the old output, not nothing.
        previous = out_dir.with_name(f".{out_dir.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        out_dir.replace(previous)
        partial.replace(out_dir)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        partial.replace(out_dir)
    package = _relocated(package, partial, out_dir)
    package.source_dir = dicom_dir.resolve()
    package.seconds = {"read_assemble": round(read_s, 3), **package.seconds, "total": round(time.perf_counter() - started, 3)}
    if package.summary_path is not None:
        package.summary_path.write_text(package.model_dump_json(indent=2))
    report("done", 1.0)
    return package, not_used


def _check_paths(dicom_dir: Path, out_dir: Path, overwrite: bool) -> None:
    source, target = dicom_dir.resolve(), out_dir.resolve()
    if target == source or target in source.parents or source in target.parents:
        raise ContourError(
            f"the output folder {out_dir} overlaps the input {dicom_dir}; writing (or --overwrite) there could "
            "destroy the CT. Choose an output folder outside the input folder."
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ContourError(f"{out_dir} is a file, not a folder; choose a folder for the output.")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ContourError(f"{out_dir} exists and is not empty; choose another folder or pass --overwrite.")


def _relocated(package: ResultPackage, old: Path, new: Path) -> ResultPackage:
    """The same package with its paths pointing into the final folder."""

    def move(path: Path | None) -> Path | None:
        return None if path is None else new / path.relative_to(old)

    return package.model_copy(
        update={
            "out_dir": new,
            "objects": [o.model_copy(update={"path": move(o.path)}) for o in package.objects],
            "previews": [move(p) for p in package.previews],
            "report_path": move(package.report_path),
            "summary_path": move(package.summary_path),
        }
    )
