"""A reviewer's corrections to a contour: brush strokes and slice-range erasures, as data.

The reviewer's browser sends a list of edits, not a mask: a few hundred bytes that travel in the
approval decision, are kept in the job's checkpoint and the audit trail, and re-apply to the
stored AI masks to exactly the same voxels every time. The list is untrusted input (it comes
from a browser or an API caller), so every edit is checked against the volume it applies to
before any voxel changes.

Coordinates are those of the display view (tools/imaging/orientation.py, target "IPL", as
the viewer and the previews show a volume): view axis 0 runs towards the patient's feet (an
axial plane is a cut along it), axis 1 towards posterior (coronal), axis 2 towards the
patient's left (sagittal). A point is (row, column) in the plane's own 2D array, in voxels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from tools.imaging.geometry import Geometry
from tools.imaging.orientation import Reorientation, reorient

DISPLAY_VIEW = "IPL"
Plane = Literal["axial", "coronal", "sagittal"]
PLANE_AXIS: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}
MAX_EDITS = 2000
MAX_POINTS = 5000
MAX_RADIUS_MM = 50.0


class EditError(ValueError):
    """An edit does not fit the result it is applied to; the message says which edit and why."""


class BrushStroke(BaseModel):
    """Paint or erase a disk of ``radius_mm`` around each point, in one plane only.

    Painting a structure takes the voxels from every other structure: a voxel is one organ.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["brush"] = "brush"
    structure: str = Field(min_length=1, max_length=64)
    mode: Literal["paint", "erase"]
    plane: Plane
    index: int = Field(ge=0, description="the plane's index along its view axis")
    points: list[tuple[float, float]] = Field(min_length=1, max_length=MAX_POINTS)
    radius_mm: float = Field(gt=0.0, le=MAX_RADIUS_MM)


class EraseRange(BaseModel):
    """Erase a structure from every plane from ``first`` to ``last`` (view indices, inclusive).

    "Erase below this plane": a lung mask that ran into the abdomen, cut off in one edit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["erase-range"] = "erase-range"
    structure: str = Field(min_length=1, max_length=64)
    plane: Plane
    first: int = Field(ge=0)
    last: int = Field(ge=0)


MaskEdit = Annotated[BrushStroke | EraseRange, Field(discriminator="kind")]
EditList = TypeAdapter(list[MaskEdit])


def edits_digest(edits: Sequence[BrushStroke | EraseRange]) -> str:
    """sha256 of the edits' canonical JSON: names this edited version (its UIDs, its record)."""
    canonical = json.dumps([e.model_dump(mode="json") for e in edits], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_edits(
    edits: Sequence[BrushStroke | EraseRange], geometry: Geometry, structures: Sequence[str], series_uid: str
) -> None:
    """Refuse, naming the edit and the series, any edit that does not fit this volume and result."""
    if not edits:
        raise EditError(f"series {series_uid}: no edits were sent; paint or erase on a slice first.")
    if len(edits) > MAX_EDITS:
        raise EditError(
            f"series {series_uid}: {len(edits)} edits, more than {MAX_EDITS}; save the edits in smaller steps."
        )
    view = reorient(geometry, DISPLAY_VIEW)
    for number, edit in enumerate(edits, start=1):
        where = f"edit {number} ({edit.kind} on {edit.structure}) of series {series_uid}"
        if edit.structure not in structures:
            raise EditError(f"{where}: the result has no structure {edit.structure!r}; it has {', '.join(structures)}.")
        axis = PLANE_AXIS[edit.plane]
        count = view.shape[axis]
        if isinstance(edit, BrushStroke):
            if edit.index >= count:
                raise EditError(f"{where}: {edit.plane} plane {edit.index} is outside the series' {count} planes.")
        elif not edit.first <= edit.last < count:
            raise EditError(
                f"{where}: planes {edit.first} to {edit.last} are not a range within the series' {count} {edit.plane} planes."
            )


def apply_edits(
    masks: Mapping[str, np.ndarray], geometry: Geometry, edits: Sequence[BrushStroke | EraseRange], series_uid: str
) -> dict[str, np.ndarray]:
    """New masks (the inputs are not changed) with ``edits`` applied in order; checked first."""
    check_edits(edits, geometry, list(masks), series_uid)
    out = {key: np.array(mask, dtype=bool, copy=True) for key, mask in masks.items()}
    view = reorient(geometry, DISPLAY_VIEW)
    for edit in edits:
        axis = PLANE_AXIS[edit.plane]
        if isinstance(edit, EraseRange):
            planes = (slice(None),) * axis + (slice(edit.first, edit.last + 1),)
            view.forward(out[edit.structure])[planes] = False
            continue
        disk = _brush(view, axis, edit)
        plane = (slice(None),) * axis + (edit.index,)
        if edit.mode == "erase":
            view.forward(out[edit.structure])[plane][disk] = False
            continue
        for key, mask in out.items():
            view.forward(mask)[plane][disk] = key == edit.structure
    return out


def _brush(view: Reorientation, axis: int, stroke: BrushStroke) -> np.ndarray:
    """The plane's voxels within ``radius_mm`` of any point of the stroke (physical distance)."""
    rows_axis, columns_axis = (a for a in range(3) if a != axis)
    shape = (view.shape[rows_axis], view.shape[columns_axis])
    row_mm, column_mm = view.spacing[rows_axis], view.spacing[columns_axis]
    reach_rows, reach_columns = int(np.ceil(stroke.radius_mm / row_mm)), int(np.ceil(stroke.radius_mm / column_mm))
    covered = np.zeros(shape, dtype=bool)
    for row, column in stroke.points:
        # Only the disk's bounding window is computed: a stroke has hundreds of points.
        r0, r1 = max(0, int(np.floor(row)) - reach_rows), min(shape[0], int(np.ceil(row)) + reach_rows + 1)
        c0, c1 = max(0, int(np.floor(column)) - reach_columns), min(shape[1], int(np.ceil(column)) + reach_columns + 1)
        if r0 >= r1 or c0 >= c1:
            continue
        rows = (np.arange(r0, r1, dtype=np.float64)[:, None] - row) * row_mm
        columns = (np.arange(c0, c1, dtype=np.float64)[None, :] - column) * column_mm
        covered[r0:r1, c0:c1] |= rows**2 + columns**2 <= stroke.radius_mm**2
    return covered
