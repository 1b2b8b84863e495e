"""The MONAI bundle a run writes, in the layout the `monai-bundle` engine loads:

    configs/inference.json   network_def, preprocessing (RAS, pixdim, HU window), sliding window
    configs/metadata.json    name, version, channel_def, what the training measured
    models/model.pt          the weights (a state dict for network_def)

The bundle's version is the configured version plus the first hex digits of the weights'
sha256: derived DICOM UIDs include the engine version (docs/architecture.md, idempotent writes), so two
different models must never share one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tools.segmentation.monai_bundle import read_bundle_config
from tools.training.config import TrainConfig
from tools.training.network import NetworkSetup


def write_bundle(bundle_dir: Path, setup: NetworkSetup, network: torch.nn.Module, config: TrainConfig, training: dict[str, Any]) -> str:
    """Write the MONAI bundle (replacing an older one whole) and return its version."""
    import monai

    staging = bundle_dir.with_name(bundle_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "configs").mkdir(parents=True)
    (staging / "models").mkdir()
    weights = staging / "models" / "model.pt"
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, weights)
    version = f"{config.version}+{hashlib.sha256(weights.read_bytes()).hexdigest()[:8]}"
    low, high = setup.hu_window
    inference = {
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "imports": ["$import torch"],
        "network_def": setup.network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {"_target_": "Spacingd", "keys": "image", "pixdim": list(setup.pixdim), "mode": "bilinear"},
                {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": low, "a_max": high, "b_min": 0.0,
                 "b_max": 1.0, "clip": True},
            ],
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(setup.roi_size),
            "sw_batch_size": config.sw_batch_size,
            "overlap": config.overlap,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            ],
        },
    }
    metadata = {
        "name": config.name,
        "version": version,
        "changelog": {version: training.get("summary", "trained by imaging-agent train")},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "task": "Left and right lung segmentation on CT",
        "description": "UNet trained or fine-tuned by `imaging-agent train` on approved lung contours.",
        "authors": "imaging-agent",
        "network_data_format": {
            "inputs": {
                "image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                          "spatial_shape": list(setup.roi_size), "dtype": "float32", "value_range": [0, 1],
                          "is_patch_data": True, "channel_def": {"0": "image"}}
            },
            "outputs": {
                "pred": {"type": "image", "format": "segmentation", "num_channels": len(setup.channel_def),
                         "spatial_shape": list(setup.roi_size), "dtype": "float32", "value_range": [0, 1],
                         "is_patch_data": True, "channel_def": setup.channel_def}
            },
        },
        "training": training,
    }
    (staging / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
    (staging / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    read_bundle_config(staging)  # what the engine will read; fails here rather than at a patient
    shutil.rmtree(bundle_dir, ignore_errors=True)
    os.replace(staging, bundle_dir)
    return version
