"""Held-out Dice per structure, measured the way the engine infers (sliding window at the bundle's roi_size)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tools.training.config import TrainConfig
from tools.training.dataset import LABEL_OF_STRUCTURE
from tools.training.network import NetworkSetup


def _dice(prediction: torch.Tensor, target: torch.Tensor, index: int) -> float:
    predicted, truth = prediction == index, target == index
    total = int(predicted.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((predicted & truth).sum()) / total


def evaluate(
    network: torch.nn.Module, cases: Sequence[dict[str, torch.Tensor]], setup: NetworkSetup, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    """Mean Dice per structure over ``cases``, sliding window at the bundle's roi_size."""
    from monai.inferers import sliding_window_inference

    network.eval()
    scores: dict[str, list[float]] = {key: [] for key in LABEL_OF_STRUCTURE}
    with torch.inference_mode():
        for item in cases:
            logits = sliding_window_inference(
                item["image"][None].to(device),
                roi_size=setup.roi_size,
                sw_batch_size=config.sw_batch_size,
                predictor=network,
                overlap=config.overlap,
                mode="gaussian",
            )
            prediction = logits.argmax(dim=1)[0].cpu()
            for key in scores:
                scores[key].append(_dice(prediction, item["label"][0], setup.label_index[key]))
    return {key: round(float(np.mean(values)), 4) for key, values in scores.items()}
