"""Engine `monai-bundle`: any MONAI bundle directory on local disk.

A bundle here is the MONAI Bundle layout (https://docs.monai.io/en/stable/mb_specification.html):

    configs/inference.json   network_def, preprocessing (ScaleIntensityRanged, Spacingd),
                             inferer (SlidingWindowInferer roi_size, sw_batch_size, overlap)
    configs/metadata.json    network_data_format.outputs.pred.channel_def: label index -> name
    models/model.pt          state dict for network_def   (or models/model.ts: TorchScript)

Nothing is downloaded. The volume is put in MONAI's usual frame — channel-first array indexed
(x, y, z) in RAS orientation, resampled to the bundle's pixdim — inferred with a sliding
window, then mapped back onto the source CT grid (nearest neighbour) so writers keep the
source geometry.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from tools.imaging.orientation import Reorientation, reorient
from tools.imaging.volume import Volume
from tools.segmentation.base import (
    STRUCTURES,
    EngineError,
    SegmentationResult,
    StructureMask,
    resolve_targets,
)
from tools.segmentation.bundle_trust import check_bundle_trusted

log = logging.getLogger(__name__)

# Bundle label names as written by people ("left lung", "lung_left", "Lung_L") -> our keys.
_NAME_TO_KEY = {
    **{s.roi_name.lower(): s.key for s in STRUCTURES.values()},
    **{s.display.lower(): s.key for s in STRUCTURES.values()},
    **{s.key: s.key for s in STRUCTURES.values()},
    "lung_left": "left-lung",
    "lung_right": "right-lung",
    "left_lung": "left-lung",
    "right_lung": "right-lung",
}


class BundleConfig(BaseModel):
    """What the engine needs from a bundle, read once from its config files."""

    root: Path
    labels: dict[int, str] = Field(description="channel index -> structure key")
    pixdim: tuple[float, float, float] | None = None
    intensity: tuple[float, float, float, float, bool] | None = Field(
        default=None, description="ScaleIntensityRanged a_min, a_max, b_min, b_max, clip"
    )
    roi_size: tuple[int, int, int] = (96, 96, 96)
    sw_batch_size: int = 1
    overlap: float = 0.25
    version: str = "unknown"
    name: str = "bundle"


def _find_transform(transforms: Sequence[Any], target: str) -> dict[str, Any] | None:
    for t in transforms:
        if isinstance(t, dict) and str(t.get("_target_", "")).split(".")[-1] == target:
            return t
    return None


def read_bundle_config(root: Path) -> BundleConfig:
    """Read labels, preprocessing and inferer settings; refuse a bundle that lacks them."""
    inference_file = root / "configs" / "inference.json"
    metadata_file = root / "configs" / "metadata.json"
    for needed in (inference_file, metadata_file):
        if not needed.exists():
            raise EngineError(
                f"MONAI bundle at {root} has no {needed.relative_to(root)}; a bundle needs "
                "configs/inference.json and configs/metadata.json. Set IMAGING_AGENT_MONAI_BUNDLE_DIR "
                "to a complete bundle directory."
            )
    inference = json.loads(inference_file.read_text())
    metadata = json.loads(metadata_file.read_text())
    try:
        channel_def = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    except KeyError as exc:
        raise EngineError(
            f"{metadata_file}: network_data_format.outputs.pred.channel_def is missing, so the "
            "engine cannot tell which output channel is which structure."
        ) from exc
    labels: dict[int, str] = {}
    for index, name in channel_def.items():
        key = _NAME_TO_KEY.get(str(name).strip().lower())
        if key is not None:
            labels[int(index)] = key
    if not labels:
        raise EngineError(
            f"{metadata_file}: none of the bundle's labels ({', '.join(map(str, channel_def.values()))}) "
            f"is a structure this system knows ({', '.join(STRUCTURES)})."
        )
    preprocessing = inference.get("preprocessing", {})
    transforms = preprocessing.get("transforms", []) if isinstance(preprocessing, dict) else []
    spacing = _find_transform(transforms, "Spacingd")
    scale = _find_transform(transforms, "ScaleIntensityRanged")
    inferer = inference.get("inferer", {})
    return BundleConfig(
        root=root,
        labels=labels,
        pixdim=tuple(float(v) for v in spacing["pixdim"]) if spacing else None,
        intensity=(
            (float(scale["a_min"]), float(scale["a_max"]), float(scale["b_min"]), float(scale["b_max"]),
             bool(scale.get("clip", False)))
            if scale
            else None
        ),
        roi_size=tuple(int(v) for v in inferer.get("roi_size", (96, 96, 96))),
        sw_batch_size=int(inferer.get("sw_batch_size", 1)),
        overlap=float(inferer.get("overlap", 0.25)),
        version=str(metadata.get("version", "unknown")),
        name=str(metadata.get("name", root.name)),
    )


def load_network(root: Path, device: torch.device) -> torch.nn.Module:
    """TorchScript `models/model.ts`, or `network_def` from inference.json with `models/model.pt`."""
    torchscript = root / "models" / "model.ts"
    weights = root / "models" / "model.pt"
    if torchscript.exists():
        net = torch.jit.load(str(torchscript), map_location=device)
    elif weights.exists():
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(root / "configs" / "inference.json"))
        try:
            net = parser.get_parsed_content("network_def")
        except Exception as exc:
            raise EngineError(f"MONAI bundle at {root}: cannot build network_def from inference.json: {exc}") from exc
        state = torch.load(str(weights), map_location=device, weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        net.load_state_dict(state)
    else:
        raise EngineError(
            f"MONAI bundle at {root} has no weights: expected models/model.pt or models/model.ts. "
            "Weights are never downloaded at run time; copy them into the bundle."
        )
    return net.to(device).eval()


def to_ras(volume: Volume) -> tuple[np.ndarray, np.ndarray, Reorientation]:
    """The HU array indexed (x, y, z) with its axes towards R, A, S; its (x, y, z) spacing; the view.

    MONAI's usual frame, made by tools/imaging/orientation.py (axis swaps and flips only), so
    ``view.backward`` puts a label map made on it back onto the volume's grid voxel for voxel.
    Training uses this same function (tools/training/dataset.py): a bundle sees at inference
    the orientation it was trained on.
    """
    view = reorient(volume.geometry, "RAS")
    return np.ascontiguousarray(view.forward(volume.array)), np.asarray(view.spacing), view


class MonaiBundleEngine:
    name = "monai-bundle"

    def __init__(
        self,
        bundle_dir: Path | None,
        device: str | None = None,
        *,
        sha256: str | None = None,
        trusted_dir: Path | None = None,
    ) -> None:
        if bundle_dir is None:
            raise EngineError(
                "the monai-bundle engine needs a bundle directory: set IMAGING_AGENT_MONAI_BUNDLE_DIR "
                "(see .env.example)."
            )
        if not bundle_dir.is_dir():
            raise EngineError(f"MONAI bundle directory {bundle_dir} does not exist; check IMAGING_AGENT_MONAI_BUNDLE_DIR.")
        # Before anything of the bundle is parsed or run (tools/segmentation/bundle_trust.py).
        self.sha256 = check_bundle_trusted(bundle_dir, sha256, trusted_dir)
        self.config = read_bundle_config(bundle_dir)
        self.version = f"{self.config.name} {self.config.version}"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.network = load_network(bundle_dir, self.device)

    def _preprocess(self, array: np.ndarray, spacing: np.ndarray) -> torch.Tensor:
        """Resample to the bundle's pixdim and scale intensities: the (1, 1, x, y, z) network input."""
        data = torch.from_numpy(array.astype(np.float32))[None, None]
        if self.config.pixdim is not None:
            size = [max(1, round(n * s / p)) for n, s, p in zip(array.shape, spacing, self.config.pixdim, strict=True)]
            data = torch.nn.functional.interpolate(data, size=size, mode="trilinear", align_corners=False)
        if self.config.intensity is not None:
            a_min, a_max, b_min, b_max, clip = self.config.intensity
            data = (data - a_min) / (a_max - a_min) * (b_max - b_min) + b_min
            if clip:
                data = data.clamp(min(b_min, b_max), max(b_min, b_max))
        return data

    def segment(self, volume: Volume, targets: Sequence[str]) -> SegmentationResult:
        from monai.inferers import sliding_window_inference

        started = time.perf_counter()
        wanted = resolve_targets(targets)
        missing = [s.key for s in wanted if s.key not in self.config.labels.values()]
        if missing:
            raise EngineError(
                f"MONAI bundle {self.config.name} cannot segment {', '.join(missing)}; "
                f"it knows {', '.join(sorted(self.config.labels.values()))}."
            )
        ras, spacing, view = to_ras(volume)
        tensor = self._preprocess(ras, spacing).to(self.device)
        with torch.inference_mode():
            logits = sliding_window_inference(
                tensor,
                roi_size=self.config.roi_size,
                sw_batch_size=self.config.sw_batch_size,
                predictor=self.network,
                overlap=self.config.overlap,
                mode="gaussian",
            )
            # Back onto the source grid before the argmax: label borders follow the CT voxels.
            logits = torch.nn.functional.interpolate(logits, size=list(ras.shape), mode="trilinear", align_corners=False)
            probabilities = torch.softmax(logits, dim=1)[0]
            confidence_ras, label_ras = probabilities.max(dim=0)
        labels = view.backward(label_ras.cpu().numpy().astype(np.uint8))
        confidence = view.backward(confidence_ras.cpu().numpy())
        key_to_index = {key: index for index, key in self.config.labels.items()}
        structures = []
        for spec in wanted:
            mask = labels == key_to_index[spec.key]
            score = float(confidence[mask].mean()) if mask.any() else 0.0
            structures.append(StructureMask(structure=spec, mask=mask, confidence=round(score, 3)))
        seconds = time.perf_counter() - started
        log.info("monai-bundle %s on series %s: %.1f s", self.config.name, volume.series_instance_uid, seconds)
        return SegmentationResult(
            engine=self.name, engine_version=self.version, structures=structures, seconds=seconds,
            parameters=self.parameters(),
        )

    def parameters(self) -> dict[str, str]:
        """The bundle (by its sha256) and the inference settings read from it; not the device."""
        config = self.config
        parameters = {
            "bundle": config.name,
            "bundle_version": config.version,
            "bundle_sha256": self.sha256,
            "labels": " ".join(f"{index}:{key}" for index, key in sorted(config.labels.items())),
            "roi_size": "x".join(str(v) for v in config.roi_size),
            "overlap": f"{config.overlap:g}",
            "sliding_window_mode": "gaussian",
        }
        if config.pixdim is not None:
            parameters["pixdim_mm"] = "x".join(f"{v:g}" for v in config.pixdim)
        if config.intensity is not None:
            a_min, a_max, b_min, b_max, clip = config.intensity
            parameters["intensity_range"] = f"{a_min:g}..{a_max:g} to {b_min:g}..{b_max:g}{' clipped' if clip else ''}"
        return parameters
