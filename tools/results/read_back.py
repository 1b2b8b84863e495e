"""An offline `contour` result folder read back for the reviewer's viewer (`imaging-agent view`).

The folder holds RTSTRUCT, SEG, SR and summary.json but no CT: the CT is read from the series
folder summary.json records (or one given), and the masks are the RTSTRUCT's contours
rasterised back onto its grid (tools/results/contours.py gives back the masks exactly).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydicom import dcmread

from tools.imaging.volume import SeriesRefusedError, assemble_volume, group_by_series, read_series_dir
from tools.results.rtstruct import RTStructError, rtstruct_masks
from tools.review.scene import Scene, SceneError
from tools.segmentation.base import STRUCTURES, QAFlag


def scene_from_folder(out_dir: Path, ct_dir: Path | None = None) -> Scene:
    """An offline `contour` result folder (summary.json, RTSTRUCT) over its CT series.

    The CT is read from ``ct_dir`` or else from the source folder summary.json records; the
    masks are the RTSTRUCT's contours rasterised onto the CT's grid.
    """
    summary_path = out_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as exc:
        raise SceneError(
            f"{summary_path} cannot be read ({exc}); point `view` at a folder written by `imaging-agent contour`."
        ) from exc
    source = ct_dir or (Path(summary["source_dir"]) if summary.get("source_dir") else None)
    if source is None:
        raise SceneError(f"{summary_path} does not say where its CT is; give the series folder with --ct DICOM_DIR.")
    rtstructs = [o["path"] for o in summary.get("objects", []) if o.get("kind") == "RTSTRUCT"]
    if not rtstructs:
        raise SceneError(f"{out_dir} holds no RTSTRUCT (summary.json lists none); run `contour` with rtstruct in --formats.")
    try:
        series = group_by_series(read_series_dir(source)).get(summary["series_instance_uid"])
        volume = assemble_volume(series) if series else None
    except (OSError, ValueError, SeriesRefusedError) as exc:
        raise SceneError(f"cannot read the CT of {out_dir} from {source}: {exc}; give its folder with --ct DICOM_DIR.") from exc
    if volume is None:
        raise SceneError(
            f"{source} does not hold series {summary['series_instance_uid']}, the one {out_dir} was contoured "
            "on; give that series' folder with --ct DICOM_DIR."
        )
    rtstruct_path = _inside(out_dir, rtstructs[0])
    try:
        masks = rtstruct_masks(dcmread(rtstruct_path), volume)
    except (OSError, ValueError, RTStructError) as exc:
        raise SceneError(f"cannot read the contours of {rtstruct_path}: {exc}") from exc
    by_roi = {spec.roi_name: spec for spec in STRUCTURES.values()}
    structures = [(by_roi[name], mask) for name, mask in masks.items() if name in by_roi]
    return Scene(
        name=f"series {volume.series_instance_uid} ({out_dir})",
        array=volume.array,
        geometry=volume.geometry,
        series_uid=volume.series_instance_uid,
        structures=structures,
        flags=[QAFlag.model_validate(f) for f in summary.get("flags", [])],
    )


def _inside(out_dir: Path, recorded: str) -> Path:
    """A file summary.json names, found in ``out_dir`` even when the folder was moved since."""
    path = Path(recorded)
    return path if path.is_file() else out_dir / path.name
