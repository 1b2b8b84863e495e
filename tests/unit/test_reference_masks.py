"""The built-in engine draws the stored reference lungs on the phantom (tests/reference_masks.py).

Masks, not bytes and not times: a faster engine passes while its masks keep Dice >= 0.999
against the stored ones; an engine meant to draw other lungs stores new references on purpose.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reference_masks import FOLDER, MIN_DICE, dice, load, phantom_volume
from tools.segmentation.lung_threshold import LungThresholdEngine

pytestmark = pytest.mark.unit


def test_phantom_masks_match_the_stored_reference(tmp_path: Path) -> None:
    reference = load(FOLDER / "phantom-ffs.npz")
    result = LungThresholdEngine().segment(phantom_volume(tmp_path / "ct"), ["lungs"])
    found = {item.structure.key: item.mask for item in result.structures}
    assert sorted(found) == sorted(reference)
    for key, mask in found.items():
        assert dice(mask, reference[key]) >= MIN_DICE, key
