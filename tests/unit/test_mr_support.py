"""MR with MedImageParse: the prompt table's MR rows, percentile windowing per volume, series choice,
and clear refusals where the built-in engines or the table do not apply."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fake_medimageparse import FakeMedImageParse
from tools.dicomweb.models import SeriesSummary
from tools.http import RetryPolicy
from tools.imaging.preflight import PreflightError, preflight_mr
from tools.imaging.series_choice import choose_series
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.phantom import PhantomSpec, Tissue, make_phantom, write_phantom
from tools.segmentation.base import EngineError, UnknownTargetError
from tools.segmentation.catalog import check_engine_modality
from tools.segmentation.medimageparse.engine import MedImageParseEngine
from tools.segmentation.prompts import build_prompts, known_targets

pytestmark = pytest.mark.unit

# T1-like signal per tissue: fat bright, liver and muscle middle, air and lung dark (arbitrary units).
_SIGNAL = {Tissue.FAT: 2600, Tissue.SOFT_TISSUE: 1100, Tissue.LIVER: 1500, Tissue.HEART: 1200, Tissue.AORTA: 900,
           Tissue.BONE_MEDULLARY: 1900, Tissue.BONE_CORTICAL: 80}


@pytest.fixture(scope="module")
def mr(tmp_path_factory: pytest.TempPathFactory) -> Volume:
    phantom = make_phantom(PhantomSpec(slices=10, rows=128, columns=128, pixel_spacing_mm=3.125,
                                       slice_thickness_mm=30.0, seed=6, noise_hu=0))
    folder = tmp_path_factory.mktemp("ct")
    write_phantom(phantom, folder)
    ct = assemble_volume(read_series_dir(Path(folder)))
    signal = np.zeros(phantom.labels.shape, dtype=np.float32)
    for tissue, value in _SIGNAL.items():
        signal[phantom.labels == tissue] = value
    return dataclasses.replace(ct, modality="MR", array=signal)


def test_mr_rows_and_the_percentile_window(mr: Volume) -> None:
    assert {"liver", "left-ventricle", "prostate"} <= set(known_targets("MR"))
    [group] = build_prompts("MR", None, ["liver"])
    assert group.text == "liver" and group.window.percentiles
    window = group.window.for_volume(mr.array)
    assert window.low_hu == pytest.approx(float(np.percentile(mr.array, 0.5)))
    assert window.high_hu == pytest.approx(float(np.percentile(mr.array, 99.5)))
    with pytest.raises(UnknownTargetError, match="no prompt for 'left-lung' on MR.*Targets known for MR: left-ventricle, liver, prostate"):
        build_prompts("MR", None, ["lungs"])


def test_medimageparse_sends_mr_slices_on_one_scale(mr: Volume) -> None:
    with FakeMedImageParse() as fake:
        engine = MedImageParseEngine(fake.url, None, batch_size=10, retry=RetryPolicy(attempts=1, backoff_s=0.0))
        result = engine.segment(mr, ["liver"])
        assert fake.problems == [] and set(fake.prompts) == {"liver"}
        images = [np.asarray(Image.open(io.BytesIO(_png(r.body, k)))) for r in fake.requests for k in range(10)]
    assert result.parameters["mr_window_percentiles"] == "0.5..99.5"
    assert [s.structure.key for s in result.structures] == ["liver"]
    # One scale for the volume: fat (the 99.5th percentile's tissue) is white, outside air black.
    assert max(int(img.max()) for img in images) == 255 and min(int(img.min()) for img in images) == 0


def _png(body: bytes, row: int) -> bytes:
    return base64.b64decode(json.loads(body)["input_data"]["data"][row][0])


def test_built_in_engines_refuse_mr_and_mr_is_chosen_when_alone(mr: Volume) -> None:
    with pytest.raises(EngineError, match="engine lung-threshold does not read MR.*Use medimageparse"):
        check_engine_modality("lung-threshold", "MR", mr.series_instance_uid)
    check_engine_modality("medimageparse", "MR", mr.series_instance_uid)
    mr_series = SeriesSummary(series_instance_uid="1.2.3", modality="MR", number_of_instances=40, slice_thickness_mm=3.0)
    ct_series = SeriesSummary(series_instance_uid="1.2.4", modality="CT", number_of_instances=120, slice_thickness_mm=1.0)
    assert choose_series("1.2", [mr_series]).modality == "MR"
    assert choose_series("1.2", [mr_series, ct_series]).modality == "CT"
    with pytest.raises(PreflightError, match="slice spacing 30.00 mm is above 10 mm"):
        preflight_mr(mr)
