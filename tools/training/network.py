"""The network a run trains and the input conventions it was built for: a new UNet, or the
network of a bundle being fine-tuned.

`NetworkSetup` is fixed for a run: it is saved in the checkpoint and a resume must match it,
and the bundle is written from it, so the engine feeds the network what it was trained on.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from pydantic import BaseModel, Field

from tools.segmentation.monai_bundle import load_network, read_bundle_config
from tools.training.config import TrainConfig, TrainingError
from tools.training.dataset import CHANNEL_DEF, LABEL_OF_STRUCTURE


class NetworkSetup(BaseModel):
    """What the network is and how its input is made: fixed for a run, checked on resume."""

    network_def: dict[str, Any]
    pixdim: tuple[float, float, float]
    hu_window: tuple[float, float]
    roi_size: tuple[int, int, int]
    channel_def: dict[str, str]
    label_index: dict[str, int] = Field(description="structure key -> output channel")


def train_device(config: TrainConfig) -> torch.device:
    return torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _unet_def(config: TrainConfig) -> dict[str, Any]:
    return {
        "_target_": "monai.networks.nets.UNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": len(CHANNEL_DEF),
        "channels": list(config.channels),
        "strides": list(config.strides),
        "num_res_units": config.num_res_units,
    }


def _build_network(network_def: dict[str, Any]) -> torch.nn.Module:
    # Parsed the way the engine parses it, so the bundle's network_def is known to load.
    from monai.bundle import ConfigParser

    return ConfigParser({"network_def": network_def}).get_parsed_content("network_def")


def network_setup(config: TrainConfig, device: torch.device) -> tuple[NetworkSetup, torch.nn.Module]:
    """The network and its input conventions: new, or taken from the bundle being fine-tuned."""
    if config.from_bundle is None:
        if len(config.strides) != len(config.channels) - 1:
            raise TrainingError(
                f"UNet channels {config.channels} need exactly {len(config.channels) - 1} strides, got {config.strides}."
            )
        factor = math.prod(config.strides)
        if any(n % factor for n in config.patch_size):
            raise TrainingError(
                f"patch size {config.patch_size} must be a multiple of {factor} (the product of the UNet strides "
                f"{config.strides}) in every axis."
            )
        network_def = _unet_def(config)
        setup = NetworkSetup(
            network_def=network_def,
            pixdim=config.pixdim,
            hu_window=config.hu_window,
            roi_size=config.patch_size,
            channel_def={str(k): v for k, v in CHANNEL_DEF.items()},
            label_index=dict(LABEL_OF_STRUCTURE),
        )
        return setup, _build_network(network_def).to(device)
    root = config.from_bundle
    if not (root / "models" / "model.pt").is_file():
        raise TrainingError(
            f"cannot fine-tune {root}: it has no models/model.pt (a state dict for network_def). A TorchScript-only "
            "bundle cannot be fine-tuned here; use a bundle with configs/inference.json network_def and model.pt."
        )
    bundle = read_bundle_config(root)
    missing = [key for key in LABEL_OF_STRUCTURE if key not in bundle.labels.values()]
    if missing:
        raise TrainingError(
            f"cannot fine-tune {root}: its output channels ({bundle.labels}) have no {', '.join(missing)}; "
            "fine-tuning needs a bundle that already segments both lungs."
        )
    inference = json.loads((root / "configs" / "inference.json").read_text())
    metadata = json.loads((root / "configs" / "metadata.json").read_text())
    low, high = (bundle.intensity[0], bundle.intensity[1]) if bundle.intensity else config.hu_window
    setup = NetworkSetup(
        network_def=inference["network_def"],
        pixdim=bundle.pixdim or config.pixdim,
        hu_window=(low, high),
        roi_size=bundle.roi_size,
        channel_def={str(k): str(v) for k, v in metadata["network_data_format"]["outputs"]["pred"]["channel_def"].items()},
        label_index={key: index for index, key in bundle.labels.items()},
    )
    network = load_network(root, device)
    return setup, network


def case_pixdim(config: TrainConfig) -> tuple[float, float, float]:
    """The grid to gather cases at: the fine-tuned bundle's pixdim (what its network knows), else the config's."""
    if config.from_bundle is not None:
        pixdim = read_bundle_config(config.from_bundle).pixdim
        if pixdim is not None:
            return pixdim
    return config.pixdim
