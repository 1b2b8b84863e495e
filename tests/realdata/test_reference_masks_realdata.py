"""The built-in engine draws the stored reference lungs on LIDC-IDRI-0001 and on the lung bases
of the TotalSegmentator example (tests/reference_masks.py): Dice >= 0.999 per lung.

These guard speed work on the engine (issue 11): the references are the engine's own masks when
they were stored, not a human truth; the accuracy tests live in test_lung_threshold_realdata.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reference_masks import FOLDER, MIN_DICE, dice, lidc_volume, load, totalsegmentator_volume
from tools.imaging.volume import Volume
from tools.segmentation.lung_threshold import LungThresholdEngine

pytestmark = pytest.mark.realdata

CASES: dict[str, Callable[[Path], Volume]] = {
    "lidc-idri-0001": lidc_volume,
    "totalsegmentator-example": totalsegmentator_volume,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_masks_match_the_stored_reference(case: str, shared_data: Path) -> None:
    reference = load(FOLDER / f"{case}.npz")
    result = LungThresholdEngine().segment(CASES[case](shared_data), ["lungs"])
    found = {item.structure.key: item.mask for item in result.structures}
    assert sorted(found) == sorted(reference)
    for key, mask in found.items():
        assert dice(mask, reference[key]) >= MIN_DICE, key
