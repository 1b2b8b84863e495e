"""Dice and surface distances on masks with known answers, and the filling of skipped manual slices."""

from __future__ import annotations

import numpy as np
import pytest

from tools.segmentation.metrics import agreement, dice, fill_missing_slices

pytestmark = pytest.mark.unit


def cube(shape: tuple[int, int, int], lo: int, hi: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[lo:hi, lo:hi, lo:hi] = True
    return mask


def test_identical_masks_agree_perfectly() -> None:
    a = cube((20, 20, 20), 5, 15)
    result = agreement(a, a, (1.0, 1.0, 1.0))
    assert (result.dice, result.hd95_mm, result.msd_mm) == (1.0, 0.0, 0.0)
    assert result.volume_ml == result.reference_ml == pytest.approx(1.0)


def test_one_voxel_larger_cube_is_one_voxel_away_in_mm_of_each_axis() -> None:
    small, large = cube((30, 30, 30), 10, 20), cube((30, 30, 30), 9, 21)
    assert dice(small, large) == pytest.approx(2 * 1000 / (1000 + 1728))
    # Faces are one voxel apart; the larger cube's edge voxels lie one voxel out along two
    # axes (sqrt(2) voxels): over 5 % of its surface, so they set HD95.
    iso = agreement(small, large, (1.0, 1.0, 1.0))
    assert iso.hd95_mm == pytest.approx(np.sqrt(2.0))
    assert 1.0 < iso.msd_mm < 1.1
    # With 3 mm slices the step along the slice axis counts 3 mm: sqrt(3^2 + 1^2) at the edges.
    thick = agreement(small, large, (3.0, 1.0, 1.0))
    assert thick.hd95_mm == pytest.approx(np.sqrt(10.0))
    assert 1.0 < thick.msd_mm < 3.0


def test_empty_mask_gives_infinite_distances() -> None:
    a = cube((10, 10, 10), 2, 8)
    result = agreement(np.zeros_like(a), a, (1.0, 1.0, 1.0))
    assert result.dice == 0.0 and result.hd95_mm == float("inf")


def test_skipped_manual_slice_is_filled_between_its_neighbours() -> None:
    reference = np.zeros((7, 20, 20), dtype=bool)
    reference[1:6, 5:15, 5:15] = True
    reference[3] = False
    reference[3, 9, 9] = True  # a stray dot where the slice should be
    filled, gaps = fill_missing_slices(reference, (3.0, 1.0, 1.0))
    assert gaps == [3]
    assert np.array_equal(filled[3], reference[2])
    # Tapering ends (apex, base) are not gaps: nothing else changes.
    assert np.array_equal(np.delete(filled, 3, axis=0), np.delete(reference, 3, axis=0))
    tapered = np.zeros((5, 20, 20), dtype=bool)
    for k, half in enumerate((1, 3, 5, 7, 9)):
        tapered[k, 10 - half : 10 + half, 10 - half : 10 + half] = True
    assert fill_missing_slices(tapered, (3.0, 1.0, 1.0))[1] == []
