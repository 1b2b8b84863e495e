"""The monai-bundle engine on bundles built here: labels, preprocessing, geometry round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.imaging.geometry import Geometry
from tools.imaging.volume import Volume
from tools.segmentation.base import EngineError
from tools.segmentation.bundle_trust import bundle_sha256
from tools.segmentation.monai_bundle import MonaiBundleEngine, read_bundle_config, to_ras

pytestmark = pytest.mark.unit

LEFT_HU, RIGHT_HU = -800, -700


class ByIntensity(torch.nn.Module):
    """Labels voxels by their scaled intensity: a network whose right answer is known exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = ((x > 0.075) & (x < 0.125)).float() * 10.0
        right = ((x > 0.125) & (x < 0.175)).float() * 10.0
        background = torch.full_like(x, 5.0)
        return torch.cat([background, left, right], dim=1)


def _write_configs(root: Path, *, pixdim: list[float] | None, network_def: dict | None = None) -> None:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    transforms: list[dict] = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -1000, "a_max": 1000, "b_min": 0.0,
         "b_max": 1.0, "clip": True},
    ]
    if pixdim:
        transforms.insert(1, {"_target_": "Spacingd", "keys": "image", "pixdim": pixdim, "mode": "bilinear"})
    inference = {
        "preprocessing": {"_target_": "Compose", "transforms": transforms},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 2, "overlap": 0.25},
    }
    if network_def:
        inference["network_def"] = network_def
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    metadata = {
        "name": "test lungs",
        "version": "0.0.1",
        "network_data_format": {
            "outputs": {"pred": {"channel_def": {"0": "background", "1": "left lung", "2": "lung_right"}}}
        },
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))


def _scripted_bundle(root: Path, pixdim: list[float] | None = None) -> Path:
    _write_configs(root, pixdim=pixdim)
    torch.jit.script(ByIntensity()).save(str(root / "models" / "model.ts"))
    return root


def _volume(direction: tuple, spacing: tuple = (1.5, 1.5, 2.0), shape: tuple = (20, 24, 28)) -> tuple[Volume, np.ndarray, np.ndarray]:
    """A block volume whose patient-left half holds LEFT_HU, patient-right half RIGHT_HU."""
    geometry = Geometry(origin=(0.0, 0.0, 0.0), spacing=spacing, direction=direction, shape=shape)
    k, j, i = np.indices(shape)
    centre = np.array([shape[2] / 2, shape[1] / 2, shape[0] / 2])
    xyz = geometry.index_to_patient(np.stack([i, j, k], axis=-1).reshape(-1, 3)).reshape(*shape, 3)
    x_mid = geometry.index_to_patient(centre)[0]
    inside = np.zeros(shape, bool)
    inside[3:-3, 4:-4, 4:-4] = True
    left = inside & (xyz[..., 0] > x_mid + 2)
    right = inside & (xyz[..., 0] < x_mid - 2)
    array = np.full(shape, 40, np.int16)
    array[left] = LEFT_HU
    array[right] = RIGHT_HU
    volume = Volume(
        array=array,
        geometry=geometry,
        series_instance_uid="1.2.3",
        study_instance_uid="1.2",
        frame_of_reference_uid="1.2.4",
        modality="CT",
        sop_instance_uids=[f"1.2.3.{n}" for n in range(shape[0])],
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    )
    return volume, left, right


ORIENTATIONS = {
    "axial head-first": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "axial feet-first": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "prone": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "sagittal-like": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), (1.0, 0.0, 0.0)),
}


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_geometry_round_trip_is_voxel_exact(tmp_path: Path, orientation: str) -> None:
    engine = MonaiBundleEngine(_scripted_bundle(tmp_path / "bundle"), device="cpu", trusted_dir=tmp_path)
    volume, left, right = _volume(ORIENTATIONS[orientation])
    result = engine.segment(volume, ["lungs"])
    masks = {s.structure.key: s.mask for s in result.structures}
    assert masks["left-lung"].shape == volume.array.shape
    np.testing.assert_array_equal(masks["left-lung"], left)
    np.testing.assert_array_equal(masks["right-lung"], right)
    assert result.engine == "monai-bundle" and "test lungs 0.0.1" in result.engine_version
    assert all(0.9 < s.confidence <= 1.0 for s in result.structures)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_network_input_is_in_ras_order(orientation: str) -> None:
    """What the bundle sees is indexed (x, y, z) with x towards patient Right, y Anterior, z Superior."""
    volume, _, _ = _volume(ORIENTATIONS[orientation])
    k, j, i = np.indices(volume.array.shape)
    lps = volume.geometry.index_to_patient(np.stack([i, j, k], axis=-1).reshape(-1, 3)).reshape(*volume.array.shape, 3)
    for axis, sign in ((0, -1), (1, -1), (2, 1)):
        volume.array = (sign * lps[..., axis] * 10).round().astype(np.int16)
        ras, spacing, _ = to_ras(volume)
        steps = np.diff(ras.astype(np.int32), axis=axis)
        assert (steps > 0).all(), f"RAS axis {axis} does not increase along the array for {orientation}"
    assert sorted(spacing.tolist()) == sorted(volume.geometry.spacing)


def test_resampling_to_the_bundle_pixdim_comes_back_onto_the_source_grid(tmp_path: Path) -> None:
    engine = MonaiBundleEngine(_scripted_bundle(tmp_path / "bundle", pixdim=[3.0, 3.0, 3.0]), device="cpu", trusted_dir=tmp_path)
    volume, left, _ = _volume(ORIENTATIONS["axial feet-first"], shape=(30, 40, 44))
    result = engine.segment(volume, ["left-lung"])
    mask = result.structures[0].mask
    dice = 2 * (mask & left).sum() / (mask.sum() + left.sum())
    assert dice > 0.85
    # What the SR and SEG name as the algorithm's parameters (TID 4019): the bundle and its settings.
    assert result.parameters == {
        "bundle": "test lungs",
        "bundle_version": "0.0.1",
        "bundle_sha256": engine.sha256,
        "labels": "1:left-lung 2:right-lung",
        "roi_size": "32x32x32",
        "overlap": "0.25",
        "sliding_window_mode": "gaussian",
        "pixdim_mm": "3x3x3",
        "intensity_range": "-1000..1000 to 0..1 clipped",
    }


def test_state_dict_bundle_with_unet(tmp_path: Path) -> None:
    root = tmp_path / "unet-bundle"
    network_def = {
        "_target_": "monai.networks.nets.UNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 3,
        "channels": [4, 8],
        "strides": [2],
        "num_res_units": 0,
    }
    _write_configs(root, pixdim=None, network_def=network_def)
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,), num_res_units=0)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    engine = MonaiBundleEngine(root, device="cpu", trusted_dir=tmp_path)
    volume, _, _ = _volume(ORIENTATIONS["axial head-first"])
    result = engine.segment(volume, ["lungs"])
    assert [s.structure.key for s in result.structures] == ["left-lung", "right-lung"]
    assert all(s.mask.shape == volume.array.shape and s.mask.dtype == bool for s in result.structures)


def test_bundle_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="IMAGING_AGENT_MONAI_BUNDLE_DIR"):
        MonaiBundleEngine(None)
    with pytest.raises(EngineError, match="does not exist"):
        MonaiBundleEngine(tmp_path / "nowhere")
    root = tmp_path / "no-weights"
    _write_configs(root, pixdim=None)
    with pytest.raises(EngineError, match="no weights"):
        MonaiBundleEngine(root, trusted_dir=tmp_path)
    assert read_bundle_config(root).labels == {1: "left-lung", 2: "right-lung"}
    engine = MonaiBundleEngine(_scripted_bundle(tmp_path / "ok"), device="cpu", trusted_dir=tmp_path)
    volume, _, _ = _volume(ORIENTATIONS["axial head-first"])
    with pytest.raises(ValueError, match="unknown segmentation target 'spleen'"):
        engine.segment(volume, ["spleen"])
    with pytest.raises(EngineError, match="cannot segment liver; it knows left-lung, right-lung"):
        engine.segment(volume, ["liver"])


def test_an_untrusted_bundle_is_refused_with_its_sha256(tmp_path: Path) -> None:
    """A bundle is code: without a matching sha256 pin or a trusted directory it is never loaded."""
    root = _scripted_bundle(tmp_path / "downloaded")
    actual = bundle_sha256(root)
    with pytest.raises(EngineError, match=f"IMAGING_AGENT_MONAI_BUNDLE_SHA256={actual}"):
        MonaiBundleEngine(root, device="cpu")
    with pytest.raises(EngineError, match="not under the trusted directory"):
        MonaiBundleEngine(root, device="cpu", trusted_dir=tmp_path / "vetted")
    assert MonaiBundleEngine(root, device="cpu", sha256=actual).sha256 == actual
    # One changed byte in a config (code) or the weights breaks the pin.
    inference = root / "configs" / "inference.json"
    inference.write_text(inference.read_text() + " ")
    with pytest.raises(EngineError, match="changed since it was vetted"):
        MonaiBundleEngine(root, device="cpu", sha256=actual)


def test_bundle_sha256_is_the_documented_shell_pipeline(tmp_path: Path) -> None:
    import subprocess

    root = _scripted_bundle(tmp_path / "bundle")
    (root / "README.md").write_text("not hashed: documentation only")
    shell = subprocess.run(
        "find configs scripts models/model.pt models/model.ts -type f 2>/dev/null | LC_ALL=C sort "
        "| xargs sha256sum | sha256sum",
        shell=True, cwd=root, capture_output=True, text=True, check=False,
    )
    assert shell.stdout.split()[0] == bundle_sha256(root)
