"""Chest radiographs: the phantom's DRR as DX, its grayscale pipeline, and MedImageParse 2D on it.

The DRR (tools/phantom/radiograph.py) carries the exact projections of the phantom's lungs and
heart; the fake scoring server (tests/fake_medimageparse.py) segments what it is sent, so a mask
lands on the truth only when windowing, orientation, padding and the way back are all right.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from tests.dicom_checks import dataset_errors, dciodvfy_errors
from tests.fake_medimageparse import FakeMedImageParse
from tools.http import RetryPolicy
from tools.imaging.projection import choose_frontal, read_projection
from tools.imaging.series_checks import SeriesRefusedError
from tools.phantom import PhantomSpec, make_phantom
from tools.phantom.radiograph import VARIANTS, Radiograph, make_radiograph
from tools.results.package import build_package
from tools.segmentation.base import STRUCTURES, EngineError, SegmentationResult, StructureMask
from tools.segmentation.medimageparse.engine import MedImageParseEngine
from tools.segmentation.projection_qa import cardiothoracic_ratio
from tools.segmentation.qa import assess

pytestmark = pytest.mark.unit

PATIENT_NAME = "Radiograph^Quentin"
PATIENT_ID = "MRN-DX-7731"
FAST_RETRY = RetryPolicy(attempts=3, backoff_s=0.0, max_backoff_s=2.0)
DICE_FLOOR = 0.75
CREATED = datetime(2024, 1, 2, 3, 4, 5)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.count_nonzero(a & b)) / float(np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def radiographs() -> dict[str, Radiograph]:
    spec = PhantomSpec(
        slices=60, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0, seed=3,
        patient_id=PATIENT_ID, patient_name=PATIENT_NAME,
    )
    phantom = make_phantom(spec)
    return {variant: make_radiograph(phantom, variant) for variant in VARIANTS}


@pytest.fixture(scope="module")
def server() -> FakeMedImageParse:
    with FakeMedImageParse() as fake:
        yield fake


def test_drr_is_a_valid_dx_image(radiographs: dict[str, Radiograph], tmp_path: Path) -> None:
    for variant, radiograph in radiographs.items():
        assert dataset_errors(radiograph.dataset, tmp_path, f"{variant}.dcm") == [], variant
    standard = radiographs["standard"]
    assert standard.left_lung.any() and standard.right_lung.any() and standard.heart.any()
    assert not (standard.heart & (standard.left_lung | standard.right_lung)).any()


def test_every_header_variant_shows_the_same_picture(radiographs: dict[str, Radiograph]) -> None:
    volumes = {variant: read_projection(r.dataset) for variant, r in radiographs.items()}
    reference = volumes["standard"][0].array
    for variant, (volume, info) in volumes.items():
        assert volume.array.shape == (1, 200, 256)
        assert np.abs(volume.array - reference).max() < 0.01, variant
        assert info.spacing_mm == pytest.approx((1.5, 1.5))
        assert info.orientation == ("L", "F") and not info.orientation_assumed
    assert volumes["monochrome1"][1].photometric == "MONOCHROME1"
    assert volumes["voi-lut"][1].voi == "VOI LUT Sequence"
    assert volumes["imager-spacing-only"][1].spacing_source == "imager pixel spacing / magnification"
    standard = radiographs["standard"]
    lung_level = float(reference[0][standard.left_lung].mean())
    heart_level = float(reference[0][standard.heart].mean())
    assert lung_level < 0.3 < heart_level, "lungs are dark and the heart bright, as on a chest radiograph"


def test_radiograph_refusals(radiographs: dict[str, Radiograph]) -> None:
    ds = copy.deepcopy(radiographs["standard"].dataset)
    del ds.PixelSpacing
    del ds.ImagerPixelSpacing
    with pytest.raises(SeriesRefusedError, match="neither Pixel Spacing nor Imager Pixel Spacing"):
        read_projection(ds)
    lateral = copy.deepcopy(radiographs["standard"].dataset)
    lateral.ViewPosition = "LL"
    other = copy.deepcopy(radiographs["standard"].dataset)
    other.ViewPosition = "RL"
    with pytest.raises(SeriesRefusedError, match="none is frontal"):
        choose_frontal([lateral, other], str(lateral.SeriesInstanceUID))
    frontal = radiographs["standard"].dataset
    assert choose_frontal([lateral, frontal], str(frontal.SeriesInstanceUID)) is frontal


def test_medimageparse_segments_lungs_and_heart_on_every_variant(
    radiographs: dict[str, Radiograph], server: FakeMedImageParse
) -> None:
    for variant, radiograph in radiographs.items():
        volume, _ = read_projection(radiograph.dataset)
        engine = MedImageParseEngine(server.url, None, retry=FAST_RETRY)
        result = engine.segment(volume, ["lungs", "heart"])
        masks = {s.structure.key: s.mask[0] for s in result.structures}
        assert dice(masks["left-lung"], radiograph.left_lung) > DICE_FLOOR, variant
        assert dice(masks["right-lung"], radiograph.right_lung) > DICE_FLOOR, variant
        assert dice(masks["heart"], radiograph.heart) > DICE_FLOOR, variant
        assert engine.requests_sent == 1
        assert result.parameters["prompts_radiograph_window"] == "left lung & right lung & heart"
        assert result.all_flags() == []
    assert server.problems == []


def test_flipped_radiograph_and_mixed_up_sides(radiographs: dict[str, Radiograph]) -> None:
    """An image stored mirrored (Patient Orientation R\\F) is shown the usual way; a model answer
    with the sides swapped is put right by patient position and flagged."""
    radiograph = radiographs["standard"]
    flipped = copy.deepcopy(radiograph.dataset)
    flipped.PixelData = np.ascontiguousarray(flipped.pixel_array[:, ::-1]).tobytes()
    flipped.PatientOrientation = ["R", "F"]
    volume, _ = read_projection(flipped)
    with FakeMedImageParse() as fake:
        result = MedImageParseEngine(fake.url, None, retry=FAST_RETRY).segment(volume, ["lungs"])
    masks = {s.structure.key: s.mask[0][:, ::-1] for s in result.structures}
    assert dice(masks["left-lung"], radiograph.left_lung) > DICE_FLOOR
    with FakeMedImageParse(mirror_sides=True) as fake:
        result = MedImageParseEngine(fake.url, None, retry=FAST_RETRY).segment(read_projection(radiograph.dataset)[0], ["lungs"])
    assert [f.code for f in result.flags] == ["laterality-corrected"]
    assert dice(result.structures[0].mask[0], radiograph.left_lung) > DICE_FLOOR


def test_lateral_is_refused_by_the_engine(radiographs: dict[str, Radiograph], server: FakeMedImageParse) -> None:
    lateral = copy.deepcopy(radiographs["standard"].dataset)
    lateral.PatientOrientation = ["P", "F"]
    volume, _ = read_projection(lateral)
    with pytest.raises(EngineError, match="not frontal"):
        MedImageParseEngine(server.url, None, retry=FAST_RETRY).segment(volume, ["lungs"])


def test_only_pixels_leave_and_busy_endpoint_is_retried(radiographs: dict[str, Radiograph], tmp_path: Path) -> None:
    radiograph = radiographs["standard"]
    path = tmp_path / "dx.dcm"
    radiograph.dataset.save_as(path, enforce_file_format=True)
    ds = dcmread(path)
    with FakeMedImageParse(failures=[(429, "0"), (500, None)]) as fake:
        engine = MedImageParseEngine(fake.url, None, retry=FAST_RETRY)
        engine.segment(read_projection(ds)[0], ["lungs", "heart"])
        assert engine.requests_sent == 3 and fake.problems == []
        bodies = [r.body for r in fake.requests]
    identifiers = [PATIENT_NAME, PATIENT_ID, "Radiograph", str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                   str(ds.SOPInstanceUID), str(ds.StudyDescription), str(ds.SeriesDescription)]
    for body in bodies:
        request = json.loads(body)
        assert set(request) == {"input_data"}
        assert [row[1] for row in request["input_data"]["data"]] == ["left lung & right lung & heart"]
        for text in identifiers:
            assert text.encode() not in body


def test_results_of_a_radiograph_seg_sr_preview_and_ctr(
    radiographs: dict[str, Radiograph], server: FakeMedImageParse, tmp_path: Path
) -> None:
    radiograph = radiographs["standard"]
    volume, _ = read_projection(radiograph.dataset)
    truth = dataclasses.replace(
        SegmentationResult(engine="truth", engine_version="1", structures=[]),
        structures=[
            StructureMask(structure=STRUCTURES[key], mask=mask[None], confidence=1.0)
            for key, mask in (("left-lung", radiograph.left_lung), ("right-lung", radiograph.right_lung),
                              ("heart", radiograph.heart))
        ],
    )
    expected = cardiothoracic_ratio(volume, truth)
    assert expected is not None and 0.4 < expected.ratio < 0.55  # the phantom's heart is of normal size
    result = MedImageParseEngine(server.url, None, retry=FAST_RETRY).segment(volume, ["lungs", "heart"])
    package = build_package([radiograph.dataset], volume, result, tmp_path / "out", created=CREATED)
    assert [o.kind for o in package.objects] == ["SEG", "SR"]
    for o in package.objects:
        assert o.path is not None and dciodvfy_errors(o.path) == [], o.kind
    areas = {s.key: s.measurements.area_mm2 for s in package.structures}
    found_masks = {s.structure.key: s.mask for s in result.structures}
    for key, mask in (("left-lung", radiograph.left_lung), ("heart", radiograph.heart)):
        pixel_mm2 = radiograph.pixel_spacing_mm**2
        assert areas[key] == pytest.approx(np.count_nonzero(found_masks[key]) * pixel_mm2, abs=0.1)
        assert areas[key] == pytest.approx(np.count_nonzero(mask) * pixel_mm2, rel=0.4)
    assert all(s.measurements.volume_ml == 0.0 and s.measurements.mean_hu is None for s in package.structures)
    found = cardiothoracic_ratio(volume, assess(volume, result))
    assert found is not None and abs(found.ratio - expected.ratio) < 0.08
    assert f"cardiothoracic ratio {found.ratio:.2f}" in package.conclusion
    assert [p.name for p in package.previews] == ["radiograph.png"]

    seg = dcmread(package.objects[0].path)
    assert seg.PatientOrientation == ["L", "F"] and "FrameOfReferenceUID" not in seg
    sr = dcmread(package.objects[1].path)
    text = str(sr)
    assert "Cardiothoracic ratio (transverse diameters)" in text and "42798000" in text
    assert sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    rebuilt = build_package([radiograph.dataset], volume, result, tmp_path / "again", created=CREATED)
    assert [o.sha256 for o in rebuilt.objects] == [o.sha256 for o in package.objects]
