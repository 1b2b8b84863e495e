"""Cases as network input: scaled tensors, and the patches one epoch trains on.

Patches are sampled half around lung, half anywhere (`RandCropByPosNegLabeld`). No
augmentation flips the x axis: left and right lung are told apart by their side, and a
mirrored patient would teach the network to guess.

An epoch's patches depend on (seed, epoch) alone, so a run resumed from its checkpoint draws
exactly the patches the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tools.training.config import TrainConfig
from tools.training.dataset import LABEL_OF_STRUCTURE, Case, resample
from tools.training.network import NetworkSetup


def prepared(case: Case, setup: NetworkSetup) -> dict[str, torch.Tensor]:
    """Channel-first float image scaled like the bundle's ScaleIntensityRanged; labels as output channels."""
    image, label = case.image, case.label
    if tuple(case.info.pixdim) != tuple(setup.pixdim):
        spacing = case.info.pixdim
        image = resample(image, spacing, setup.pixdim, labels=False)
        label = resample(label, spacing, setup.pixdim, labels=True)
    low, high = setup.hu_window
    scaled = np.clip((image.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    target = np.zeros(label.shape, np.int64)
    for key, value in LABEL_OF_STRUCTURE.items():
        target[label == value] = setup.label_index[key]
    return {"image": torch.from_numpy(scaled)[None], "label": torch.from_numpy(target)[None]}


def epoch_patches(
    train: Sequence[dict[str, torch.Tensor]], setup: NetworkSetup, config: TrainConfig, epoch: int
) -> list[dict[str, torch.Tensor]]:
    from monai.transforms import Compose, RandCropByPosNegLabeld, SpatialPadd

    sampler = Compose(
        [
            # Padding value 0 is air after scaling: a patch at the edge sees air, as a scanner would.
            SpatialPadd(keys=("image", "label"), spatial_size=setup.roi_size),
            RandCropByPosNegLabeld(
                keys=("image", "label"),
                label_key="label",
                spatial_size=setup.roi_size,
                pos=1.0,
                neg=1.0,
                num_samples=config.samples_per_case,
            ),
        ]
    )
    sampler.set_random_state(seed=(config.seed * 100_003 + epoch) % 2**32)
    patches: list[dict[str, torch.Tensor]] = []
    for item in train:
        for patch in sampler(dict(item)):
            patches.append({"image": torch.as_tensor(patch["image"]), "label": torch.as_tensor(patch["label"])})
    return patches
