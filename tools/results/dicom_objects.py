"""One step: a segmentation result -> its RTSTRUCT, SEG and SR files, hashed.

Apart from tools/results/package.py so that highdicom, which the SEG and SR writers need, is
imported only where the objects are built: in the `contour` command that is a forked child,
which loads it while the parent segments (issue 11).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map
from pydicom import Dataset

from tools.imaging.projection import is_projection
from tools.imaging.volume import Volume
from tools.results.common import DerivedKind, DerivedObject, encoded
from tools.results.key_objects import ko_dataset
from tools.results.overlay import overlay_datasets
from tools.results.projection_sr import projection_sr_dataset
from tools.results.rtstruct import rtstruct_dataset
from tools.results.seg import seg_dataset
from tools.results.sr import sr_dataset
from tools.segmentation.base import SegmentationResult

Progress = Callable[[str, float], None]


def load_standard_tables() -> None:
    """Load highdicom's tables of the standard (IODs, modules, attributes) now.

    Every SEG and SR constructor reads them; the first read parses about 10 MB of JSON. A
    forked builder calls this while its parent is still segmenting. These loaders are
    highdicom's own cached functions (private, so highdicom is pinned in pyproject.toml).
    """
    get_sop_class_iod_map()
    get_iod_module_map()
    get_module_attribute_map()


def write_object(ds: Dataset, kind: DerivedKind, path: Path) -> DerivedObject:
    data, described = encoded(ds, kind)
    path.write_bytes(data)
    return described.model_copy(update={"path": path})


def write_dicom_objects(
    source: Sequence[Dataset],
    volume: Volume,
    result: SegmentationResult,
    out_dir: Path,
    formats: Sequence[str],
    created: datetime | None,
    volumes_ml: Callable[[], dict[str, float]],
    report: Progress,
) -> tuple[list[DerivedObject], dict[str, float]]:
    """RTSTRUCT, SEG, SR, the overlay series and the Key Object Selection, as `formats` asks,
    written into `out_dir`; and the seconds each took.

    Only the SR needs the measurements: `volumes_ml` is asked for them after RTSTRUCT and SEG,
    so a forked build can start before the masks are measured.
    """
    objects: list[DerivedObject] = []
    built: list[Dataset] = []
    seconds: dict[str, float] = {}
    stage, started = "", 0.0

    def begin(name: str, fraction: float) -> None:
        nonlocal stage, started
        report(name, fraction)
        stage, started = name, time.perf_counter()

    def keep(ds: Dataset, kind: DerivedKind, name: str) -> None:
        objects.append(write_object(ds, kind, out_dir / name))
        built.append(ds)

    def end() -> None:
        seconds[stage] = round(time.perf_counter() - started, 3)

    if is_projection(volume.modality):
        # A radiograph has no Frame of Reference for an RTSTRUCT, and no slices for the overlay series.
        if "seg" in formats:
            begin("seg", 0.4)
            seg = seg_dataset(source, volume, result, created=created)
            keep(seg, "SEG", "seg.dcm")
            end()
            if "sr" in formats:
                begin("sr", 0.6)
                keep(projection_sr_dataset(source, volume, result, seg, created=created), "SR", "sr.dcm")
                end()
        return objects, seconds
    if "rtstruct" in formats:
        begin("rtstruct", 0.2)
        keep(rtstruct_dataset(source, volume, result, created=created), "RTSTRUCT", "rtstruct.dcm")
        end()
    if "seg" in formats:
        begin("seg", 0.4)
        seg = seg_dataset(source, volume, result, created=created)
        keep(seg, "SEG", "seg.dcm")
        end()
        if "sr" in formats:
            volumes = volumes_ml()
            begin("sr", 0.6)
            keep(sr_dataset(source, volume, result, seg, volumes, created=created), "SR", "sr.dcm")
            end()
    if "overlay" in formats:
        begin("overlay", 0.7)
        for number, image in enumerate(overlay_datasets(source, volume, result, created=created), start=1):
            keep(image, "SC", f"overlay_{number}.dcm")
        end()
    if "ko" in formats:
        begin("ko", 0.75)
        keep(ko_dataset(built, volume, result, created=created), "KO", "ko.dcm")
        end()
    return objects, seconds
