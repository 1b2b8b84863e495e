"""A reviewer's edits (tools/review/edits.py): which voxels change, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from tools.imaging.geometry import Geometry
from tools.review.edits import BrushStroke, EditError, EditList, EraseRange, apply_edits, edits_digest

pytestmark = pytest.mark.unit

SERIES = "1.2.3.4"


def _geometry(slice_direction: float = 1.0) -> Geometry:
    """Axial slices (10 x 20 x 30), slice index growing towards the head (+z) or the feet (-z)."""
    return Geometry(
        origin=(0.0, 0.0, 0.0),
        spacing=(1.0, 1.0, 2.0),
        direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, slice_direction)),
        shape=(10, 20, 30),
    )


def _masks() -> dict[str, np.ndarray]:
    left = np.zeros((10, 20, 30), dtype=bool)
    right = np.zeros((10, 20, 30), dtype=bool)
    left[:, 5:15, 16:26] = True
    right[:, 5:15, 4:14] = True
    return {"left-lung": left, "right-lung": right}


def test_erase_range_on_axial_planes_follows_the_display_order_not_the_array_order() -> None:
    # Display axis 0 runs towards the feet: with slices stacked towards the head (+z), view
    # plane 0 is the array's last slice.
    masks = _masks()
    edited = apply_edits(masks, _geometry(1.0), [EraseRange(structure="left-lung", plane="axial", first=0, last=2)], SERIES)
    assert not edited["left-lung"][7:].any() and edited["left-lung"][:7].sum() == masks["left-lung"][:7].sum()
    assert np.array_equal(edited["right-lung"], masks["right-lung"])
    feet_first = apply_edits(
        masks, _geometry(-1.0), [EraseRange(structure="left-lung", plane="axial", first=0, last=2)], SERIES
    )
    assert not feet_first["left-lung"][:3].any() and feet_first["left-lung"][3:].any()


def test_erasing_with_the_brush_clears_a_disk_in_one_plane_only() -> None:
    masks = _masks()
    stroke = BrushStroke(structure="right-lung", mode="erase", plane="axial", index=4, points=[(10.0, 20.0)], radius_mm=2.0)
    edited = apply_edits(masks, _geometry(-1.0), [stroke], SERIES)
    removed = masks["right-lung"] & ~edited["right-lung"]
    # Display view IPL of a feet-ward stack: rows run posterior (array rows, +y), columns towards
    # the patient's left (array columns, +x): the disk sits at array row 10, column 20 of slice 4.
    assert removed.sum() == 0  # the right lung does not reach column 20
    stroke = BrushStroke(structure="right-lung", mode="erase", plane="axial", index=4, points=[(10.0, 8.0)], radius_mm=2.0)
    edited = apply_edits(masks, _geometry(-1.0), [stroke], SERIES)
    removed = masks["right-lung"] & ~edited["right-lung"]
    assert set(np.flatnonzero(removed.any(axis=(1, 2)))) == {4}
    rows, columns = np.nonzero(removed[4])
    assert removed.sum() == 13  # the voxels within 2 mm of (10, 8) on a 1 mm grid
    assert ((rows - 10) ** 2 + (columns - 8) ** 2 <= 4).all()


def test_painting_takes_the_voxels_from_the_other_structure() -> None:
    masks = _masks()
    stroke = BrushStroke(
        structure="left-lung", mode="paint", plane="coronal", index=10, points=[(5.0, 10.0), (5.0, 12.0)], radius_mm=1.0
    )
    edited = apply_edits(masks, _geometry(-1.0), [stroke], SERIES)
    gained = edited["left-lung"] & ~masks["left-lung"]
    assert gained.any()
    assert not (edited["left-lung"] & edited["right-lung"]).any()
    assert set(np.flatnonzero(gained.any(axis=(0, 2)))) == {10}  # coronal plane 10 = array row 10


def test_the_inputs_are_not_changed_and_the_digest_names_the_edits() -> None:
    masks = _masks()
    before = {k: v.copy() for k, v in masks.items()}
    edits = [EraseRange(structure="left-lung", plane="sagittal", first=0, last=29)]
    apply_edits(masks, _geometry(), edits, SERIES)
    assert all(np.array_equal(masks[k], before[k]) for k in masks)
    assert edits_digest(edits) == edits_digest(EditList.validate_json(EditList.dump_json(edits)))
    assert edits_digest(edits) != edits_digest([EraseRange(structure="left-lung", plane="sagittal", first=0, last=28)])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (EraseRange(structure="liver", plane="axial", first=0, last=1), "has no structure 'liver'"),
        (EraseRange(structure="left-lung", plane="axial", first=3, last=10), "not a range within the series' 10 axial"),
        (EraseRange(structure="left-lung", plane="axial", first=5, last=2), "not a range"),
        (
            BrushStroke(structure="left-lung", mode="paint", plane="sagittal", index=30, points=[(1, 1)], radius_mm=1),
            "sagittal plane 30 is outside the series' 30 planes",
        ),
    ],
)
def test_an_edit_that_does_not_fit_is_refused_naming_it_and_the_series(edit: object, message: str) -> None:
    with pytest.raises(EditError, match=message) as raised:
        apply_edits(_masks(), _geometry(), [edit], SERIES)  # type: ignore[list-item]
    assert SERIES in str(raised.value) and "edit 1" in str(raised.value)


def test_no_edits_is_refused() -> None:
    with pytest.raises(EditError, match="no edits were sent"):
        apply_edits(_masks(), _geometry(), [], SERIES)


@pytest.mark.parametrize(
    "payload",
    [
        '[{"kind": "brush", "structure": "left-lung", "mode": "paint", "plane": "axial", "index": 0, "points": [[NaN, 1]], "radius_mm": 1}]',
        '[{"kind": "brush", "structure": "left-lung", "mode": "paint", "plane": "axial", "index": 0, "points": [[1, 1]], "radius_mm": 500}]',
        '[{"kind": "brush", "structure": "left-lung", "mode": "smudge", "plane": "axial", "index": 0, "points": [[1, 1]], "radius_mm": 1}]',
        '[{"kind": "erase-range", "structure": "left-lung", "plane": "axial", "first": -1, "last": 2}]',
        '[{"kind": "erase-range", "structure": "left-lung", "plane": "axial", "first": 0, "last": 2, "extra": 1}]',
        '[{"kind": "flood", "structure": "left-lung"}]',
    ],
)
def test_malformed_edits_from_a_browser_do_not_validate(payload: str) -> None:
    with pytest.raises(ValidationError):
        EditList.validate_json(payload)
