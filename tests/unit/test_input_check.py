"""MedImageInsight's zero-shot input check against the contract server: a chest CT and a chest
radiograph are what their goals expect, a mislabelled series is not; failures; what leaves."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tests.fake_medimageinsight import FakeMedImageInsight
from tools.http import RetryPolicy
from tools.imaging.projection import read_projection
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.phantom import Phantom, PhantomSpec, make_phantom, write_phantom
from tools.phantom.radiograph import make_radiograph, mislabelled_radiograph
from tools.segmentation.input_check import CT_CHEST, LABELS, XR_CHEST_PA, InputCheckError, MedImageInsightChecker

pytestmark = pytest.mark.unit

FAST_RETRY = RetryPolicy(attempts=2, backoff_s=0.0, max_backoff_s=1.0)


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom(PhantomSpec(slices=60, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0,
                                    seed=5, patient_id="MRN-MI2-9", patient_name="Insight^Ignatius"))


def test_expected_inputs_match_and_a_mislabelled_one_does_not(phantom: Phantom, tmp_path: Path) -> None:
    write_phantom(phantom, tmp_path / "ct")
    ct = assemble_volume(read_series_dir(tmp_path / "ct"))
    dx, _ = read_projection(make_radiograph(phantom).dataset)
    wrong, _ = read_projection(mislabelled_radiograph(phantom))
    with FakeMedImageInsight() as fake:
        checker = MedImageInsightChecker(fake.url, None, retry=FAST_RETRY)
        results = {name: checker.check(volume) for name, volume in (("ct", ct), ("dx", dx), ("wrong", wrong))}
        assert fake.problems == []
        assert checker.requests_sent == 4  # the labels once, then one image per series
        bodies = [r.body for r in fake.requests]
    assert results["ct"].best == CT_CHEST and results["ct"].matches
    assert results["dx"].best == XR_CHEST_PA and results["dx"].matches
    assert results["wrong"].best == CT_CHEST and not results["wrong"].matches
    flag = results["wrong"].flag(wrong.series_instance_uid)
    assert flag is not None and flag.code == "input-mismatch" and "computed tomography chest axial" in flag.message
    assert results["ct"].flag(ct.series_instance_uid) is None
    labels = json.loads(bodies[0])["input_data"]["data"]
    assert [row[1] for row in labels] == list(LABELS) and all(row[0] is None for row in labels)
    for body in bodies:
        for text in ("Insight", "Ignatius", "MRN-MI2-9", ct.study_instance_uid, ct.series_instance_uid):
            assert text.encode() not in body


def test_check_failures_name_the_series(phantom: Phantom) -> None:
    dx, _ = read_projection(make_radiograph(phantom).dataset)
    with FakeMedImageInsight(failures=[(503, "0"), (503, "0")]) as fake:
        with pytest.raises(InputCheckError, match=f"series {dx.series_instance_uid}"):
            MedImageInsightChecker(fake.url, None, retry=FAST_RETRY).check(dx)
    with FakeMedImageInsight() as fake:
        checker = MedImageInsightChecker(fake.url, None, retry=FAST_RETRY)
        blank = dataclasses.replace(dx, array=np.zeros_like(dx.array))
        result = checker.check(blank)
    assert not result.matches and result.best not in result.expected
    assert isinstance(blank, Volume)
