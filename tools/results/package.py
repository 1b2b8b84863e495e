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

from tools.imaging.volume import Volume
from tools.results.common import DerivedKind, DerivedObject, derived_uid, encoded
from tools.results.key_objects import ko_dataset
from tools.results.overlay import overlay_datasets
from tools.results.previews import render_previews
from tools.results.report import ReportInput, ReportStructure, conclusion, render_report
from tools.results.rtstruct import rtstruct_dataset
from tools.results.seg import seg_dataset
from tools.results.sr import sr_dataset
from tools.segmentation.base import QAFlag, SegmentationResult, StructureMeasurements
from tools.segmentation.qa import assess

OutputFormat = Literal["rtstruct", "seg", "sr", "png", "json", "overlay", "ko"]
ALL_FORMATS: tuple[OutputFormat, ...] = ("rtstruct", "seg", "sr", "png", "json")
"""what is built unless asked otherwise"""
OPTIONAL_FORMATS: tuple[OutputFormat, ...] = ("overlay", "ko")
"""the secondary-capture overlay series and the Key Object Selection, built only when asked for"""

Progress = Callable[[str, float], None]


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


def result_uid(volume: Volume, result: SegmentationResult) -> str:
    """The UID naming this result as a whole (DiagnosticReport identifier, Task output)."""
    keys = [s.structure.key for s in result.structures]
    return derived_uid(volume.series_instance_uid, result.engine, result.engine_version, keys, "SR", "result-set")


def _measured(measurements: StructureMeasurements | None, series: str, key: str) -> StructureMeasurements:
    if measurements is None:  # assess measures every structure; only a hand-made "assessed" result lacks them
        raise ValueError(
            f"the segmentation of series {series} is marked assessed but has no measurements for {key}; "
            "segment the series again so that it is measured and QA-checked."
        )
    return measurements


def _write(ds: Dataset, kind: DerivedKind, path: Path) -> DerivedObject:
    data, described = encoded(ds, kind)
    path.write_bytes(data)
    return described.model_copy(update={"path": path})


def build_package(
    source: Sequence[Dataset],
    volume: Volume,
    result: SegmentationResult,
    out_dir: Path,
    *,
    formats: Sequence[OutputFormat] = ALL_FORMATS,
    created: datetime | None = None,
    progress: Progress | None = None,
) -> ResultPackage:
    """Write every requested output of the assessed `result` into `out_dir`.

    A result that was not assessed yet (tools/segmentation/qa.py) is assessed here first.
    `created` fixes every timestamp in the DICOM objects, so rebuilding the same result gives
    byte-identical files (and the same hashes the approver saw).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda stage, fraction: None)
    seconds: dict[str, float] = {}

    def timed(stage: str, fraction: float) -> Callable[[], None]:
        started = time.perf_counter()
        report(stage, fraction)
        return lambda: seconds.__setitem__(stage, round(time.perf_counter() - started, 3))

    done = timed("measure", 0.0)
    result = assess(volume, result)
    measurements = {
        s.structure.key: _measured(s.measurements, volume.series_instance_uid, s.structure.key) for s in result.structures
    }
    flags = result.all_flags()
    done()
    if "sr" in formats and "seg" not in formats:
        raise ValueError("the SR references the SEG: ask for 'seg' too, or leave 'sr' out")
    if "ko" in formats and not {"rtstruct", "seg", "overlay"} & set(formats):
        raise ValueError("the Key Object Selection points at the other DICOM objects: ask for at least one of them")

    objects: list[DerivedObject] = []
    built: list[Dataset] = []

    def keep(ds: Dataset, kind: DerivedKind, name: str) -> None:
        objects.append(_write(ds, kind, out_dir / name))
        built.append(ds)

    if "rtstruct" in formats:
        done = timed("rtstruct", 0.2)
        keep(rtstruct_dataset(source, volume, result, created=created), "RTSTRUCT", "rtstruct.dcm")
        done()
    if "seg" in formats:
        done = timed("seg", 0.4)
        seg = seg_dataset(source, volume, result, created=created)
        keep(seg, "SEG", "seg.dcm")
        done()
        if "sr" in formats:
            done = timed("sr", 0.6)
            volumes_ml = {key: m.volume_ml for key, m in measurements.items()}
            keep(sr_dataset(source, volume, result, seg, volumes_ml, created=created), "SR", "sr.dcm")
            done()
    if "overlay" in formats:
        done = timed("overlay", 0.7)
        for number, image in enumerate(overlay_datasets(source, volume, result, created=created), start=1):
            keep(image, "SC", f"overlay_{number}.dcm")
        done()
    if "ko" in formats:
        done = timed("ko", 0.75)
        keep(ko_dataset(built, volume, result, created=created), "KO", "ko.dcm")
        done()
    previews: list[Path] = []
    if "png" in formats:
        done = timed("previews", 0.8)
        previews = render_previews(volume, result, out_dir / "previews")
        done()

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
            )
            for s in result.structures
        ],
        flags=flags,
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
        seconds={"segment": round(result.seconds, 3), **seconds},
    )
    if package.summary_path is not None:
        package.summary_path.write_text(json.dumps(package.model_dump(mode="json"), indent=2))
    report("done", 1.0)
    return package
