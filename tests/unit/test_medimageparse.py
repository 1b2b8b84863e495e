"""The MedImageParse adapter against a scoring server that follows the documented contract.

The fake endpoint (tests/fake_medimageparse.py) decodes the PNGs it is sent and computes
masks from their pixels, so these tests check the whole path: prompt table, windowing,
encoding, batching, padding and un-padding, the radiological view, geometry back onto the
CT (head-first and feet-first phantoms against their exact lung masks), retries, timeouts,
failures, and that no header text ever leaves. Phantoms are written as DICOM and read back
with the real loader, so the request bodies can be searched for every identifier the files hold.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from agent.settings import Settings
from tests.fake_medimageparse import FakeMedImageParse
from tools.http import RetryPolicy
from tools.imaging.geometry import Geometry
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.phantom import Phantom, PhantomSpec, make_phantom, write_phantom
from tools.segmentation.base import EngineError, UnknownTargetError
from tools.segmentation.catalog import EngineCatalog
from tools.segmentation.medimageparse.engine import MedImageParseEngine
from tools.segmentation.medimageparse.view import Placement, axial_view, from_model_mask, to_model_image
from tools.segmentation.medimageparse.wire import (
    MODEL_SIZE,
    ScoringError,
    build_scoring_request,
    parse_scoring_response,
)
from tools.segmentation.prompts import WINDOWS, _parse_table, build_prompts

pytestmark = pytest.mark.unit

# An adult-size chest at low resolution: 128x128 at 3.125 mm, 10 slices of 30 mm. Every slice
# costs a 1024x1024 PNG each way whatever its matrix, so the slice count sets the test time.
SPEC = {"slices": 10, "rows": 128, "columns": 128, "pixel_spacing_mm": 3.125, "slice_thickness_mm": 30.0}
PATIENT_NAME = "Zzyzx^Quentin"
PATIENT_ID = "MRN-4471-QZ"
STUDY_DESCRIPTION = "CT THORAX Quentin research"
FAST_RETRY = RetryPolicy(attempts=3, backoff_s=0.0, max_backoff_s=2.0)
DICE_FLOOR = 0.95


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.count_nonzero(a & b)) / float(np.count_nonzero(a) + np.count_nonzero(b))


def centroid_x(volume: Volume, mask: np.ndarray) -> float:
    k, r, c = np.argwhere(mask).mean(axis=0)
    return float(volume.geometry.index_to_patient(np.array([c, r, k]))[0])


def written_phantom(tmp_path: Path, position: str) -> tuple[Phantom, Volume]:
    spec = PhantomSpec(
        **SPEC, patient_position=position, patient_name=PATIENT_NAME, patient_id=PATIENT_ID,
        study_description=STUDY_DESCRIPTION,
    )
    phantom = make_phantom(spec)
    write_phantom(phantom, tmp_path / position)
    return phantom, assemble_volume(read_series_dir(tmp_path / position))


@pytest.fixture(scope="module")
def hfs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Phantom, Volume]:
    return written_phantom(tmp_path_factory.mktemp("hfs"), "HFS")


@pytest.fixture(scope="module")
def ffs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Phantom, Volume]:
    return written_phantom(tmp_path_factory.mktemp("ffs"), "FFS")


def engine(server: FakeMedImageParse, **kwargs: object) -> MedImageParseEngine:
    options: dict[str, object] = {"batch_size": 5, "timeout_s": 10.0, "retry": FAST_RETRY}
    options.update(kwargs)
    key = options.pop("key", None)
    return MedImageParseEngine(server.url, key, **options)  # type: ignore[arg-type]


def assert_lungs_match(phantom_or_masks: tuple[np.ndarray, np.ndarray], volume: Volume, result) -> None:
    left_truth, right_truth = phantom_or_masks
    masks = {s.structure.key: s.mask for s in result.structures}
    assert masks["left-lung"].shape == volume.array.shape
    assert dice(masks["left-lung"], left_truth) > DICE_FLOOR
    assert dice(masks["right-lung"], right_truth) > DICE_FLOOR
    assert centroid_x(volume, masks["left-lung"]) > centroid_x(volume, masks["right-lung"])


# --- prompt table ------------------------------------------------------------------------


def test_lungs_are_asked_together_in_the_lung_window() -> None:
    groups = build_prompts("CT", "CHEST", ["lungs"])
    assert len(groups) == 1
    assert groups[0].text == "left lung & right lung"
    assert groups[0].window == WINDOWS["lung"]
    assert [item.target for item in groups[0].items] == ["left-lung", "right-lung"]
    assert {item.category for item in groups[0].items} == {"lung"}


def test_targets_needing_other_windows_go_in_separate_groups() -> None:
    groups = build_prompts("ct", "CHEST_TO_PELVIS", ["left-lung", "liver", "right-lung"])
    assert [(g.window.name, g.text) for g in groups] == [("lung", "left lung & right lung"), ("abdomen", "liver")]


def test_unknown_target_is_refused_with_the_known_ones() -> None:
    with pytest.raises(UnknownTargetError) as error:
        build_prompts("CT", "CHEST", ["left-lung", "gallstone"])
    message = str(error.value)
    assert "gallstone" in message
    assert all(key in message for key in ("left-lung", "right-lung", "liver", "pancreas", "spleen"))


def test_other_modality_and_body_part_are_refused() -> None:
    with pytest.raises(UnknownTargetError, match="no prompt for 'left-lung' on MR.*CT"):
        build_prompts("MR", None, ["left-lung"])
    with pytest.raises(UnknownTargetError, match="not expected in a CT of body part HEAD.*CHEST"):
        build_prompts("CT", "HEAD", ["left-lung"])
    assert build_prompts("CT", None, ["left-lung"])[0].text == "left lung"


def test_table_rows_are_checked() -> None:
    header = "target | modality | body parts | prompt | window | category\n"
    with pytest.raises(ValueError, match="may not contain '&'"):
        _parse_table(header + "x | CT | CHEST | left lung & heart | lung | lung")
    with pytest.raises(ValueError, match="unknown window 'bone'"):
        _parse_table(header + "x | CT | CHEST | rib | bone | other")


# --- encoding, placement, decoding ---------------------------------------------------------


def test_request_holds_lossless_pngs_of_the_arrays_and_nothing_else() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (MODEL_SIZE, MODEL_SIZE, 1), dtype=np.uint8).repeat(3, axis=2) for _ in range(2)]
    body = json.loads(build_scoring_request(images, "left lung & right lung"))
    assert body == {"input_data": {"columns": ["image", "text"], "index": [0, 1], "data": body["input_data"]["data"]}}
    for (encoded, text), image in zip(body["input_data"]["data"], images, strict=True):
        assert text == "left lung & right lung"
        decoded = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert decoded.mode == "RGB" and not decoded.text  # no tEXt/iTXt chunks
        assert np.array_equal(np.asarray(decoded), image)
    with pytest.raises(ValueError, match="1024x1024 RGB uint8"):
        build_scoring_request([np.zeros((512, 512, 3), dtype=np.uint8)], "left lung")


@pytest.mark.parametrize(
    ("shape", "pixel_mm", "expected"),
    [
        ((384, 512), (0.7, 0.7), Placement(top=128, left=0, height=768, width=1024)),
        ((512, 384), (0.7, 0.7), Placement(top=0, left=128, height=1024, width=768)),
        # Non-square pixels: 256 rows of 1.4 mm by 512 columns of 0.7 mm is a square field.
        ((256, 512), (1.4, 0.7), Placement(top=0, left=0, height=1024, width=1024)),
    ],
)
def test_placement_keeps_the_physical_aspect_ratio(shape, pixel_mm, expected) -> None:
    assert Placement.fit(shape, pixel_mm) == expected


@pytest.mark.parametrize(("shape", "pixel_mm"), [((384, 512), (0.7, 0.7)), ((200, 512), (1.4, 0.7))])
def test_a_shape_survives_padding_and_unpadding(shape, pixel_mm) -> None:
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    y, x = rows * pixel_mm[0], columns * pixel_mm[1]
    truth = ((y - 130) ** 2 + (x - 150) ** 2 < 60**2) | ((y > 40) & (y < 90) & (x > 250) & (x < 330))
    hu = np.where(truth, -850.0, 40.0)
    placement = Placement.fit(shape, pixel_mm)
    image = to_model_image(hu, WINDOWS["lung"], placement)
    outside = np.ones((MODEL_SIZE, MODEL_SIZE), dtype=bool)
    outside[placement.top : placement.top + placement.height, placement.left : placement.left + placement.width] = False
    assert not image[outside].any()  # black padding
    # A perfect "model": everything darker than -400 HU on the canvas, padding excluded.
    scores = np.where((image[:, :, 0] < 76) & ~outside, 255, 0).astype(np.uint8)
    back = from_model_mask(scores, placement, shape)
    assert back.shape == shape
    assert dice(back, truth) > 0.98
    assert np.abs(np.argwhere(back).mean(axis=0) - np.argwhere(truth).mean(axis=0)).max() < 1.0


def test_response_decoding_follows_the_documented_forms() -> None:
    masks = np.zeros((2, MODEL_SIZE, MODEL_SIZE), dtype=np.uint8)
    masks[1, 10:20, 30:40] = 200
    features = {"data": base64.b64encode(masks.tobytes()).decode(), "shape": [2, 1024, 1024], "dtype": "uint8"}
    # The docs' example quotes image_features and text_features Python-style.
    row = {"image_features": repr(features), "text_features": "['lung', 'lung']"}
    [decoded] = parse_scoring_response([row], n_rows=1, n_prompts=2)
    assert np.array_equal(decoded.masks, masks) and decoded.categories == ["lung", "lung"]
    # ... and also describe the prompts as the third axis.
    layout = np.moveaxis(masks, 0, 2)
    third = {"data": base64.b64encode(layout.tobytes()).decode(), "shape": [1024, 1024, 2], "dtype": "uint8"}
    [decoded] = parse_scoring_response([{"image_features": json.dumps(third), "text_features": ["a", "b"]}], 1, 2)
    assert np.array_equal(decoded.masks, masks)
    with pytest.raises(ScoringError, match="2 results for 3 images"):
        parse_scoring_response([row, row], n_rows=3, n_prompts=2)
    with pytest.raises(ScoringError, match=r"shape \[2, 1024, 1024\], expected \[3, 1024, 1024\]") as error:
        parse_scoring_response([row], n_rows=1, n_prompts=3)
    assert error.value.row == 0


# --- the engine against the fake endpoint -----------------------------------------------------


@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_masks_land_on_the_right_voxels(position: str, hfs, ffs) -> None:
    phantom, volume = hfs if position == "HFS" else ffs
    with FakeMedImageParse() as server:
        result = engine(server).segment(volume, ["lungs"])
    assert server.problems == []
    assert result.engine == "medimageparse" and "1.0.0" in result.engine_version
    assert_lungs_match((phantom.left_lung, phantom.right_lung), volume, result)
    assert all(f.code != "laterality-corrected" for f in result.flags)
    # The fake scores 230 inside: the confidence is the mean score of the mask pixels.
    assert [s.confidence for s in result.structures] == [0.902, 0.902]
    # What the SR and SEG name as the algorithm's parameters (TID 4019).
    assert result.parameters == {
        "mode": "2d",
        "mask_threshold": "128",
        "image_size": "1024",
        "prompts_lung_window": "left lung & right lung",
        "lung_window_hu": "-1000..1000",
    }


def test_feet_first_slices_are_shown_in_the_same_radiological_view(hfs, ffs) -> None:
    seen = []
    for _, volume in (hfs, ffs):
        with FakeMedImageParse() as server:
            engine(server, batch_size=10).segment(volume, ["lungs"])
        seen.append(server.images)
    # FFS array order runs superior -> inferior: its slice k is the HFS slice n-1-k, pixel for pixel.
    assert len(seen[0]) == len(seen[1]) == SPEC["slices"]
    assert all(np.array_equal(a, b) for a, b in zip(seen[0], reversed(seen[1]), strict=True))


@pytest.mark.parametrize("batch_size", [1, 3, 10, 16])
def test_slices_go_in_batches(batch_size: int, hfs) -> None:
    phantom, volume = hfs
    with FakeMedImageParse() as server:
        mpe = engine(server, batch_size=batch_size)
        result = mpe.segment(volume, ["lungs"])
    expected = math.ceil(SPEC["slices"] / batch_size)
    assert len(server.requests) == mpe.requests_sent == expected
    rows = [len(json.loads(r.body)["input_data"]["data"]) for r in server.requests]
    assert rows == [min(batch_size, SPEC["slices"] - i * batch_size) for i in range(expected)]
    assert mpe.bytes_sent == sum(len(r.body) for r in server.requests)
    assert_lungs_match((phantom.left_lung, phantom.right_lung), volume, result)


def resampled(phantom: Phantom, volume: Volume, rows: slice, row_step: int) -> tuple[Volume, np.ndarray, np.ndarray]:
    """Keep ``rows`` of every slice, every ``row_step``-th: a non-square matrix with non-square pixels."""
    geometry = volume.geometry
    first_row = rows.start or 0
    origin = geometry.index_to_patient(np.array([0.0, float(first_row), 0.0]))
    array = np.ascontiguousarray(volume.array[:, rows][:, ::row_step])
    new = Volume(
        array=array,
        geometry=Geometry(
            origin=tuple(float(v) for v in origin),
            spacing=(geometry.spacing[0], geometry.spacing[1] * row_step, geometry.spacing[2]),
            direction=geometry.direction,
            shape=array.shape,
        ),
        series_instance_uid=volume.series_instance_uid,
        study_instance_uid=volume.study_instance_uid,
        frame_of_reference_uid=volume.frame_of_reference_uid,
        modality="CT",
        sop_instance_uids=volume.sop_instance_uids,
        sop_class_uid=volume.sop_class_uid,
    )
    pick = (slice(None), rows)
    return new, phantom.left_lung[pick][:, ::row_step], phantom.right_lung[pick][:, ::row_step]


@pytest.mark.parametrize(
    ("rows", "row_step", "placement"),
    [
        # 96 of 128 rows, square pixels: a 128x96 matrix, padded above and below.
        (slice(16, 112), 1, Placement(top=128, left=0, height=768, width=1024)),
        # every other row: 64 rows of 6.25 mm by 128 columns of 3.125 mm, a square field.
        (slice(0, 128), 2, Placement(top=0, left=0, height=1024, width=1024)),
        # both: 48 rows of 6.25 mm (300 mm) by 128 columns of 3.125 mm (400 mm).
        (slice(16, 112), 2, Placement(top=128, left=0, height=768, width=1024)),
    ],
)
def test_non_square_matrices_and_pixels_come_back_on_their_grid(rows, row_step, placement, hfs) -> None:
    phantom, volume = hfs
    small, left, right = resampled(phantom, volume, rows, row_step)
    with FakeMedImageParse() as server:
        result = engine(server).segment(small, ["lungs"])
    assert Placement.fit(small.array.shape[1:], axial_view(small).spacing[1:]) == placement
    content = np.zeros((MODEL_SIZE, MODEL_SIZE), dtype=bool)
    content[placement.top : placement.top + placement.height, placement.left : placement.left + placement.width] = True
    for image in server.images:
        assert not image[~content].any()  # black padding outside the slice's box
    assert_lungs_match((left, right), small, result)


def test_429_and_5xx_are_retried_honouring_retry_after(hfs) -> None:
    phantom, volume = hfs
    with FakeMedImageParse(failures=[(429, "0.4"), (503, None)]) as server:
        mpe = engine(server, batch_size=10, retry=RetryPolicy(attempts=3, backoff_s=0.0, max_backoff_s=5.0))
        started = time.perf_counter()
        result = mpe.segment(volume, ["lungs"])
        elapsed = time.perf_counter() - started
    assert len(server.requests) == mpe.requests_sent == 3
    assert elapsed >= 0.4  # the endpoint asked for 0.4 s and the backoff alone would not wait
    assert_lungs_match((phantom.left_lung, phantom.right_lung), volume, result)


def test_an_endpoint_that_keeps_failing_fails_the_study_clearly(hfs) -> None:
    _, volume = hfs
    with FakeMedImageParse(failures=[(500, None)] * 3) as server:
        with pytest.raises(EngineError) as error:
            engine(server).segment(volume, ["lungs"])
    assert len(server.requests) == 3
    message = str(error.value)
    assert volume.series_instance_uid in message
    assert "slices 0-4 of 10" in message and "HTTP 500 after 3 tries" in message
    assert "run the study again, or choose another engine" in message


def test_each_request_has_its_own_timeout(hfs) -> None:
    phantom, volume = hfs
    # Two slices a request are scored in a fraction of the 1 s timeout; the delayed ones are not.
    with FakeMedImageParse(delays=[2.5]) as server:
        mpe = engine(server, batch_size=2, timeout_s=1.0)
        result = mpe.segment(volume, ["lungs"])
    assert len(server.requests) == SPEC["slices"] // 2 + 1  # the slow one, then its retry
    assert_lungs_match((phantom.left_lung, phantom.right_lung), volume, result)
    with FakeMedImageParse(delays=[2.5, 2.5]) as server:
        with pytest.raises(EngineError, match=r"slices 0-1 of 10.*timed out \(ReadTimeout\) after 2 tries"):
            retry = RetryPolicy(attempts=2, backoff_s=0.0)
            engine(server, batch_size=2, timeout_s=1.0, retry=retry).segment(volume, ["lungs"])


def test_a_bad_result_for_one_slice_fails_the_study_naming_the_slice(hfs) -> None:
    _, volume = hfs
    with FakeMedImageParse(corrupt_rows={(1, 2)}) as server:
        with pytest.raises(EngineError) as error:
            engine(server, batch_size=5).segment(volume, ["lungs"])
    message = str(error.value)
    assert f"slice 7 of 10, SOP Instance {volume.sop_instance_uids[7]}" in message
    assert volume.series_instance_uid in message and "expected [2, 1024, 1024]" in message
    assert len(server.requests) == 2  # nothing after the failure


def test_no_header_text_ever_leaves(hfs, tmp_path: Path) -> None:
    phantom, volume = hfs
    secrets = {
        PATIENT_NAME, PATIENT_NAME.replace("^", " "), "Zzyzx", "Quentin", PATIENT_ID, STUDY_DESCRIPTION,
        phantom.study_instance_uid, phantom.series_instance_uid, phantom.frame_of_reference_uid,
        *phantom.sop_instance_uids,
    }
    for mode in ("2d", "3d"):
        with FakeMedImageParse() as server:
            engine(server, mode=mode).segment(volume, ["lungs"])
        assert server.requests
        for request in server.requests:
            sent = (request.path + json.dumps(request.headers)).encode() + request.body
            for secret in secrets:
                assert secret.encode() not in sent, f"{secret!r} was sent in a {mode} request"
            body = json.loads(request.body)
            assert set(body) == {"input_data"}
        for text in server.prompts:
            assert set(text.split(" & ")) <= {"left lung", "right lung"}
    # Inside the encodings too: PNGs without text chunks; a NIfTI without description or origin.
    for volume_sent in server.volumes:
        header = volume_sent.header
        assert header["descrip"].tobytes().strip(b"\x00") == b""
        assert header["aux_file"].tobytes().strip(b"\x00") == b""
        assert np.allclose(volume_sent.affine[:3, 3], 0.0)
        assert not volume_sent.header.extensions


def test_left_and_right_are_reassigned_by_geometry_when_the_model_swaps_them(ffs) -> None:
    phantom, volume = ffs
    with FakeMedImageParse(mirror_sides=True) as server:
        result = engine(server).segment(volume, ["lungs"])
    assert_lungs_match((phantom.left_lung, phantom.right_lung), volume, result)
    [flag] = [f for f in result.flags if f.code == "laterality-corrected"]
    masks = [s.mask for s in result.structures]
    lung_slices = int(np.count_nonzero((masks[0] | masks[1]).any(axis=(1, 2))))
    assert flag.severity == "warning" and f"on {lung_slices} slice(s)" in flag.message
    assert volume.series_instance_uid in flag.message


def test_the_key_is_sent_as_a_bearer_token(hfs) -> None:
    _, volume = hfs
    with FakeMedImageParse(key="s3cret") as server:
        engine(server, key="s3cret", batch_size=16).segment(volume, ["lungs"])
        assert server.requests[0].headers["Authorization"] == "Bearer s3cret"
        with pytest.raises(EngineError, match="HTTP 401.*IMAGING_AGENT_MEDIMAGEPARSE_KEY"):
            engine(server, key="wrong", batch_size=16).segment(volume, ["lungs"])
    assert len(server.requests) == 2  # a refused key is not retried


def test_the_documented_python_style_answer_is_understood(hfs) -> None:
    phantom, volume = hfs
    with FakeMedImageParse(python_literal=True) as server:
        result = engine(server).segment(volume, ["lungs"])
    assert_lungs_match((phantom.left_lung, phantom.right_lung), volume, result)


def test_non_axial_series_are_refused_in_2d(hfs) -> None:
    _, volume = hfs
    n, rows, columns = volume.array.shape
    sagittal = Volume(
        array=volume.array.transpose(2, 1, 0).copy(),
        geometry=Geometry(
            origin=volume.geometry.origin,
            spacing=(volume.geometry.spacing[2], volume.geometry.spacing[1], volume.geometry.spacing[0]),
            direction=((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)),
            shape=(columns, rows, n),
        ),
        series_instance_uid=volume.series_instance_uid,
        study_instance_uid=volume.study_instance_uid,
        frame_of_reference_uid=volume.frame_of_reference_uid,
        modality="CT",
        sop_instance_uids=[f"1.2.3.{k}" for k in range(columns)],
        sop_class_uid=volume.sop_class_uid,
    )
    with FakeMedImageParse() as server:
        with pytest.raises(EngineError, match="not axial.*3D mode"):
            engine(server).segment(sagittal, ["lungs"])
    assert server.requests == []


@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_3d_mode_sends_one_canonical_nifti_per_target(position: str, hfs, ffs) -> None:
    phantom, volume = hfs if position == "HFS" else ffs
    with FakeMedImageParse() as server:
        mpe = engine(server, mode="3d")
        result = mpe.segment(volume, ["lungs"])
    assert server.problems == []
    assert len(server.requests) == mpe.requests_sent == 2
    assert server.prompts == ["left lung", "right lung"]
    sent = server.volumes[0]
    assert nib.aff2axcodes(sent.affine) == ("R", "A", "S")
    assert np.allclose(nib.affines.voxel_sizes(sent.affine), [3.125, 3.125, 30.0])
    assert result.engine_version.endswith("(3d)")
    assert result.parameters == {"mode": "3d", "mask_threshold": "128", "prompts": "left lung & right lung"}
    assert_lungs_match((phantom.left_lung, phantom.right_lung), volume, result)


def test_settings_build_the_engine(tmp_path: Path) -> None:
    settings = Settings(
        medimageparse_url="https://mip.eastus2.inference.ml.azure.com/score", medimageparse_key="k",
        medimageparse_batch_size=4, medimageparse_timeout_s=12.5, medimageparse_mode="3d",
        http_retry_attempts=2, _env_file=None,
    )
    built = EngineCatalog(settings.engine_options()).get("medimageparse")
    assert (built.endpoint, built.batch_size, built.timeout_s, built.mode) == (
        "https://mip.eastus2.inference.ml.azure.com/score", 4, 12.5, "3d",
    )
    assert built.retry.attempts == 2
    with pytest.raises(EngineError, match="IMAGING_AGENT_MEDIMAGEPARSE_URL"):
        EngineCatalog(Settings(_env_file=None).engine_options()).get("medimageparse")
    with pytest.raises(EngineError, match="plain http to another machine"):
        settings = Settings(medimageparse_url="http://mip.example.org/score", _env_file=None)
        EngineCatalog(settings.engine_options()).get("medimageparse")
