"""One step: a segmentation result -> every output file, hashed and summarised.

Used by the offline `contour` command and by the study workflow's build step, so both write
exactly the same RTSTRUCT, SEG, SR, previews, report and summary.json. Measurements and QA
flags are those `qa.assess` added to the result (once; an assessed result is not measured again).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel
from pydicom import Dataset

from tools.forked import ForkedCall, ForkedCallError, Receive
from tools.imaging.projection import is_projection
from tools.imaging.volume import Volume
from tools.results.common import DerivedObject, ResultBuildError, derived_uid, edit_digest
from tools.results.previews import render_previews, render_radiograph_preview
from tools.results.report import ReportInput, ReportStructure, conclusion, render_report
from tools.segmentation.base import QAFlag, ResultEdit, SegmentationResult, StructureMeasurements
from tools.segmentation.projection_qa import cardiothoracic_ratio
from tools.segmentation.qa import assess

OutputFormat = Literal["rtstruct", "seg", "sr", "png", "json", "overlay", "ko"]
ALL_FORMATS: tuple[OutputFormat, ...] = ("rtstruct", "seg", "sr", "png", "json")
"""what is built unless asked otherwise"""
RADIOGRAPH_FORMATS: tuple[OutputFormat, ...] = ("seg", "sr", "png", "json")
"""what a radiograph can have: no Frame of Reference for an RTSTRUCT, no slices for the overlay series"""
OPTIONAL_FORMATS: tuple[OutputFormat, ...] = ("overlay", "ko")
"""the secondary-capture overlay series and the Key Object Selection, built only when asked for"""

Progress = Callable[[str, float], None]
DicomBuild = ForkedCall[tuple[list[DerivedObject], list[Path], dict[str, float]]]


class StructureSummary(BaseModel):
    key: str
    roi_name: str
    display: str
    confidence: float
    measurements: StructureMeasurements


class ResultPackage(BaseModel):
    """Everything built for one series: files, hashes, measurements, flags, timings."""

    result_uid: str
    study_instance_uid: str
    series_instance_uid: str
    engine: str
    engine_version: str
    out_dir: Path
    objects: list[DerivedObject]
    previews: list[Path]
    report_path: Path
    summary_path: Path | None
    structures: list[StructureSummary]
    flags: list[QAFlag]
    conclusion: str
    seconds: dict[str, float]
    edit: ResultEdit | None = None
    """set when the masks are a reviewer's correction of the AI's"""
    source_dir: Path | None = None
    """the CT series folder an offline `contour` read (`imaging-agent view` shows the result over it)"""


def result_uid(volume: Volume, result: SegmentationResult) -> str:
    """The UID naming this result as a whole (DiagnosticReport identifier, Task output)."""
    keys = [s.structure.key for s in result.structures]
    return derived_uid(
        volume.series_instance_uid, result.engine, result.engine_version, keys, "SR", "result-set", edit_digest(result)
    )


def _measured(measurements: StructureMeasurements | None, series: str, key: str) -> StructureMeasurements:
    if measurements is None:  # assess measures every structure; only a hand-made "assessed" result lacks them
        raise ValueError(
            f"the segmentation of series {series} is marked assessed but has no measurements for {key}; "
            "segment the series again so that it is measured and QA-checked."
        )
    return measurements


def _previews(
    volume: Volume,
    result: SegmentationResult,
    out_dir: Path,
    formats: Sequence[OutputFormat],
    seconds: dict[str, float],
    report: Progress,
) -> list[Path]:
    if "png" not in formats:
        return []
    report("previews", 0.8)
    started = time.perf_counter()
    if is_projection(volume.modality):
        previews = render_radiograph_preview(volume, result, out_dir / "previews")
    else:
        previews = render_previews(volume, result, out_dir / "previews")
    seconds["previews"] = round(time.perf_counter() - started, 3)
    return previews


def fork_dicom_build(source: Sequence[Dataset], volume: Volume) -> DicomBuild:
    """A forked child (tools/forked.py) that will build the previews, RTSTRUCT, SEG and SR of `volume`.

    Start it before segmenting: the child imports the writers and loads highdicom's tables
    (about 0.4 s in a fresh process) while this one segments, then waits for
    :func:`build_package` to hand it the result. Only from a single-threaded process (the
    offline `contour` command): see tools/forked.py.
    """
    return ForkedCall(
        lambda receive: _build_when_given(source, volume, receive),
        f"building the DICOM objects of series {volume.series_instance_uid}",
    )


def _parent_reports(stage: str, fraction: float) -> None:
    """A forked builder's progress: none of its own, the parent reports for both."""


def _build_when_given(
    source: Sequence[Dataset], volume: Volume, receive: Receive
) -> tuple[list[DerivedObject], list[Path], dict[str, float]]:
    """The child's work: previews, RTSTRUCT and SEG from the masks, then the SR once the parent
    has measured them (about as long, on LIDC, as the parent's QA)."""
    from tools.results.dicom_objects import load_standard_tables, write_dicom_objects

    load_standard_tables()
    result, out_dir, formats, created = receive()
    seconds: dict[str, float] = {}
    previews = _previews(volume, result, out_dir, formats, seconds, _parent_reports)
    objects, dicom_seconds = write_dicom_objects(
        source, volume, result, out_dir, formats, created, receive, _parent_reports
    )
    return objects, previews, {**seconds, **dicom_seconds}


def build_package(
    source: Sequence[Dataset],
    volume: Volume,
    result: SegmentationResult,
    out_dir: Path,
    *,
    formats: Sequence[OutputFormat] = ALL_FORMATS,
    created: datetime | None = None,
    progress: Progress | None = None,
    dicom: DicomBuild | None = None,
) -> ResultPackage:
    """Write every requested output of the assessed `result` into `out_dir`.

    A result that was not assessed yet (tools/segmentation/qa.py) is assessed here first.
    `created` fixes every timestamp in the DICOM objects, so rebuilding the same result gives
    byte-identical files (and the same hashes the approver saw).

    `dicom`: a child from :func:`fork_dicom_build` renders the previews and builds RTSTRUCT,
    SEG and SR while this process measures and QA-checks: the same bytes, on two cores.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda stage, fraction: None)
    if is_projection(volume.modality):
        formats = [f for f in formats if f in RADIOGRAPH_FORMATS]
    seconds: dict[str, float] = {}
    if "sr" in formats and "seg" not in formats:
        raise ValueError("the SR references the SEG: ask for 'seg' too, or leave 'sr' out")
    if "ko" in formats and not {"rtstruct", "seg", "overlay"} & set(formats):
        raise ValueError("the Key Object Selection points at the other DICOM objects: ask for at least one of them")

    def timed(stage: str, fraction: float) -> Callable[[], None]:
        started = time.perf_counter()
        report(stage, fraction)
        return lambda: seconds.__setitem__(stage, round(time.perf_counter() - started, 3))

    def volumes_of(assessed: SegmentationResult) -> dict[str, float]:
        return {
            s.structure.key: _measured(s.measurements, volume.series_instance_uid, s.structure.key).volume_ml
            for s in assessed.structures
        }

    def measured() -> SegmentationResult:
        done = timed("measure", 0.0)
        assessed = assess(volume, result)
        done()
        return assessed

    if dicom is not None:
        dicom.send((result, out_dir, formats, created))
        result = measured()
        if "sr" in formats:
            dicom.send(volumes_of(result))
        try:
            objects, previews, dicom_seconds = dicom.result()
        except ForkedCallError as exc:
            raise ResultBuildError(str(exc)) from exc
    else:
        from tools.results.dicom_objects import write_dicom_objects

        result = measured()
        objects, dicom_seconds = write_dicom_objects(
            source, volume, result, out_dir, formats, created, lambda: volumes_of(result), report
        )
        previews = _previews(volume, result, out_dir, formats, seconds, report)
    seconds.update(dicom_seconds)
    measurements = {
        s.structure.key: _measured(s.measurements, volume.series_instance_uid, s.structure.key) for s in result.structures
    }
    flags = result.all_flags()

    spacing = volume.geometry.spacing
    report_input = ReportInput(
        study_instance_uid=volume.study_instance_uid,
        series_instance_uid=volume.series_instance_uid,
        series_images=volume.array.shape[0],
        slice_spacing_mm=spacing[2],
        engine=result.engine,
        engine_version=result.engine_version,
        structures=[
            ReportStructure(
                display=s.structure.display,
                volume_ml=measurements[s.structure.key].volume_ml,
                mean_hu=measurements[s.structure.key].mean_hu or 0.0,
                n_components=measurements[s.structure.key].n_components,
                area_mm2=measurements[s.structure.key].area_mm2,
            )
            for s in result.structures
        ],
        flags=flags,
        modality=volume.modality,
        cardiothoracic_ratio=ctr.ratio if (ctr := cardiothoracic_ratio(volume, result)) is not None else None,
    )
    report_path = out_dir / "report.txt"
    report_path.write_text(render_report(report_input))

    package = ResultPackage(
        result_uid=result_uid(volume, result),
        study_instance_uid=volume.study_instance_uid,
        series_instance_uid=volume.series_instance_uid,
        engine=result.engine,
        engine_version=result.engine_version,
        out_dir=out_dir,
        objects=objects,
        previews=previews,
        report_path=report_path,
        summary_path=out_dir / "summary.json" if "json" in formats else None,
        structures=[
            StructureSummary(
                key=s.structure.key,
                roi_name=s.structure.roi_name,
                display=s.structure.display,
                confidence=s.confidence,
                measurements=measurements[s.structure.key],
            )
            for s in result.structures
        ],
        flags=flags,
        conclusion=conclusion(report_input),
        edit=result.edit,
        seconds={"segment": round(result.seconds, 3), **seconds},
    )
    if package.summary_path is not None:
        package.summary_path.write_text(json.dumps(package.model_dump(mode="json"), indent=2))
    report("done", 1.0)
    return package
