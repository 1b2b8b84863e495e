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
from typing import Literal

from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map
from pydicom import Dataset

from tools.imaging.volume import Volume
from tools.results.common import DerivedObject, encoded
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


def write_object(ds: Dataset, kind: Literal["RTSTRUCT", "SEG", "SR"], path: Path) -> DerivedObject:
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
    """RTSTRUCT, SEG and SR written into `out_dir`, and the seconds each took.

    Only the SR needs the measurements: `volumes_ml` is asked for them after RTSTRUCT and SEG,
    so a forked build can start before the masks are measured.
    """
    objects: list[DerivedObject] = []
    seconds: dict[str, float] = {}
    stage, started = "", 0.0

    def begin(name: str, fraction: float) -> None:
        nonlocal stage, started
        report(name, fraction)
        stage, started = name, time.perf_counter()

    def end(built: DerivedObject) -> None:
        objects.append(built)
        seconds[stage] = round(time.perf_counter() - started, 3)

    if "rtstruct" in formats:
        begin("rtstruct", 0.2)
        end(write_object(rtstruct_dataset(source, volume, result, created=created), "RTSTRUCT", out_dir / "rtstruct.dcm"))
    if "seg" in formats:
        begin("seg", 0.4)
        seg = seg_dataset(source, volume, result, created=created)
        end(write_object(seg, "SEG", out_dir / "seg.dcm"))
        if "sr" in formats:
            volumes = volumes_ml()
            begin("sr", 0.6)
            end(write_object(sr_dataset(source, volume, result, seg, volumes, created=created), "SR", out_dir / "sr.dcm"))
    return objects, seconds
