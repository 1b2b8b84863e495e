"""Train or fine-tune a MONAI UNet on the cases in a folder; write a bundle the engine loads.

The run directory holds everything of one run:

    checkpoints/last.pt   model, optimizer, history and split after the latest finished epoch
    run.json              the configuration and split (what a resume must match)
    metrics.json          loss and held-out Dice per epoch, final Dice per structure
    bundle/               the MONAI bundle (configs/inference.json, configs/metadata.json,
                          models/model.pt): set IMAGING_AGENT_MONAI_BUNDLE_DIR to it

Training uses DiceCE loss (MONAI `DiceCELoss`) on patches sampled half around lung, half
anywhere (`RandCropByPosNegLabeld`). No augmentation flips the x axis: left and right lung
are told apart by their side, and a mirrored patient would teach the network to guess.

Each epoch draws its patches and batch order from (seed, epoch), so a run resumed from its
checkpoint continues exactly as the uninterrupted run would have.

The bundle's version is the configured version plus the first hex digits of the weights'
sha256: derived DICOM UIDs include the engine version (docs/architecture.md, idempotent writes), so two
different models must never share one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from tools.segmentation.monai_bundle import load_network, read_bundle_config
from tools.training.dataset import (
    CHANNEL_DEF,
    DEFAULT_PIXDIM,
    LABEL_OF_STRUCTURE,
    Case,
    list_cases,
    read_case,
    read_skipped,
    resample,
    split_cases,
)

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.pt"


class TrainConfig(BaseModel):
    """What to train. The defaults suit a CPU run on lung CT at 2 mm."""

    epochs: int = Field(default=50, ge=1, description="total epochs of the run (a resume continues up to it)")
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    min_cases: int = Field(default=5, ge=2, description="at least one for training and one held out")
    pixdim: tuple[float, float, float] = DEFAULT_PIXDIM
    patch_size: tuple[int, int, int] = (96, 96, 96)
    samples_per_case: int = Field(default=2, ge=1, description="patches drawn from each case per epoch")
    batch_size: int = Field(default=2, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = Field(default=2, ge=0)
    hu_window: tuple[float, float] = Field(default=(-1000.0, 500.0), description="HU scaled to [0, 1], clipped")
    sw_batch_size: int = Field(default=2, ge=1)
    overlap: float = Field(default=0.25, ge=0, lt=1)
    seed: int = 0
    device: str | None = Field(default=None, description="cpu, cuda, cuda:1; default: cuda when present")
    from_bundle: Path | None = Field(default=None, description="fine-tune this bundle instead of a new UNet")
    name: str = "imaging-agent lungs UNet"
    version: str = "0.1.0"


class EpochRecord(BaseModel):
    epoch: int
    loss: float
    dice: dict[str, float]
    seconds: float


class TrainResult(BaseModel):
    bundle_dir: Path
    run_dir: Path
    version: str
    first_epoch: int = Field(description="first epoch run by this call (1 for a fresh run)")
    last_epoch: int
    train_cases: list[str]
    val_cases: list[str]
    dice: dict[str, float] = Field(description="structure key -> mean held-out Dice after the last epoch")
    history: list[EpochRecord]
    seconds: float = Field(description="wall time of this call")


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message names the folder or file and what to do."""


class TooFewCasesError(TrainingError):
    """Fewer usable cases than the configured minimum."""


class _Setup(BaseModel):
    """What the network is and how its input is made: fixed for a run, checked on resume."""

    network_def: dict[str, Any]
    pixdim: tuple[float, float, float]
    hu_window: tuple[float, float]
    roi_size: tuple[int, int, int]
    channel_def: dict[str, str]
    label_index: dict[str, int] = Field(description="structure key -> output channel")


def _device(config: TrainConfig) -> torch.device:
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


def _setup(config: TrainConfig, device: torch.device) -> tuple[_Setup, torch.nn.Module]:
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
        setup = _Setup(
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
    setup = _Setup(
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


def _too_few(cases_dir: Path, found: int, needed: int) -> TooFewCasesError:
    skipped = read_skipped(cases_dir)
    lines = [f"  - series {s.get('series_instance_uid', '?')} (study {s.get('study_instance_uid', '?')}): {s.get('reason', '?')}" for s in skipped]
    why = ("\nSkipped when gathering:\n" + "\n".join(lines)) if lines else "\nNo case was skipped: the PACS holds no more approved results."
    return TooFewCasesError(
        f"found {found} training case(s) in {cases_dir}, need at least {needed} (some to train on and at least one "
        f"held out to measure Dice). Approve more results, or store contours a radiologist made, then gather again."
        f"{why}"
    )


def _prepared(case: Case, setup: _Setup) -> dict[str, torch.Tensor]:
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


def _patches(train: Sequence[dict[str, torch.Tensor]], setup: _Setup, config: TrainConfig, epoch: int) -> list[dict[str, torch.Tensor]]:
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


def _dice(prediction: torch.Tensor, target: torch.Tensor, index: int) -> float:
    predicted, truth = prediction == index, target == index
    total = int(predicted.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((predicted & truth).sum()) / total


def evaluate(
    network: torch.nn.Module, cases: Sequence[dict[str, torch.Tensor]], setup: _Setup, config: TrainConfig, device: torch.device
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


def _train_epoch(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: torch.nn.Module,
    patches: list[dict[str, torch.Tensor]],
    config: TrainConfig,
    epoch: int,
    device: torch.device,
    advance: Callable[[float], None],
) -> float:
    network.train()
    order = torch.randperm(len(patches), generator=torch.Generator().manual_seed(config.seed * 7919 + epoch)).tolist()
    losses: list[float] = []
    for start in range(0, len(order), config.batch_size):
        batch = [patches[i] for i in order[start : start + config.batch_size]]
        images = torch.stack([p["image"] for p in batch]).to(device)
        labels = torch.stack([p["label"] for p in batch]).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        advance(losses[-1])
    return float(np.mean(losses))


def _save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    path = run_dir / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _load_checkpoint(run_dir: Path, setup: _Setup, device: torch.device) -> dict[str, Any]:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise TrainingError(f"nothing to resume in {run_dir}: {CHECKPOINT} does not exist. Run without --resume to start.")
    state = torch.load(path, map_location=device, weights_only=True)
    saved = _Setup.model_validate(state["setup"])
    if saved != setup:
        raise TrainingError(
            f"the checkpoint {path} was made for another network or input convention "
            f"(pixdim {saved.pixdim}, roi {saved.roi_size}, network {saved.network_def.get('_target_')} "
            f"{saved.network_def.get('channels', '')}) than this run asks for; resume with the same options, "
            "or train into a new --out folder."
        )
    return state


def write_bundle(bundle_dir: Path, setup: _Setup, network: torch.nn.Module, config: TrainConfig, training: dict[str, Any]) -> str:
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


def _progress_bar(show: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not show, transient=False,
    )


def train(
    cases_dir: Path, run_dir: Path, config: TrainConfig, *, resume: bool = False, show_progress: bool = True
) -> TrainResult:
    """Train (or fine-tune ``config.from_bundle``) on the cases in ``cases_dir``; write ``run_dir/bundle``.

    Raises:
        TooFewCasesError: fewer than ``config.min_cases`` cases; the message lists the cases the
            gather skipped and why.
        TrainingError: a checkpoint exists and ``resume`` is False, nothing to resume, or the
            checkpoint is for another network.
    """
    started = time.perf_counter()
    paths = list_cases(cases_dir)
    if len(paths) < config.min_cases:
        raise _too_few(cases_dir, len(paths), config.min_cases)
    if (run_dir / CHECKPOINT).exists() and not resume:
        raise TrainingError(
            f"{run_dir} already holds a training run ({CHECKPOINT}); pass --resume to continue it, "
            "or choose a new --out folder."
        )
    device = _device(config)
    torch.manual_seed(config.seed)
    setup, network = _setup(config, device)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    history: list[EpochRecord] = []
    first_epoch = 1
    if resume:
        state = _load_checkpoint(run_dir, setup, device)
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = [EpochRecord.model_validate(h) for h in state["history"]]
        first_epoch = int(state["epoch"]) + 1
        if first_epoch > config.epochs + 1:
            raise TrainingError(
                f"the checkpoint in {run_dir} is at epoch {state['epoch']}, past --epochs {config.epochs}; "
                f"ask for more than {state['epoch']} epochs to go on training."
            )
        train_ids, val_ids = list(state["split"]["train"]), list(state["split"]["val"])
    else:
        train_ids, val_ids = split_cases([p.stem for p in paths], config.val_fraction)
    by_id = {p.stem: p for p in paths}
    absent = [c for c in [*train_ids, *val_ids] if c not in by_id]
    if absent:
        raise TrainingError(
            f"the checkpoint's split names {len(absent)} case(s) no longer in {cases_dir} (e.g. {absent[0]}); "
            "restore them, or start a new run in a new --out folder."
        )
    train_items = [_prepared(read_case(by_id[c]), setup) for c in train_ids]
    val_items = [_prepared(read_case(by_id[c]), setup) for c in val_ids]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(
        json.dumps({"config": config.model_dump(mode="json"), "setup": setup.model_dump(mode="json"),
                    "split": {"train": train_ids, "val": val_ids}, "cases_dir": str(cases_dir)}, indent=2)
    )
    log.info("training on %d cases, %d held out, device %s, epochs %d..%d", len(train_ids), len(val_ids), device, first_epoch, config.epochs)

    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    steps = math.ceil(len(train_items) * config.samples_per_case / config.batch_size)
    with _progress_bar(show_progress) as bar:
        overall = bar.add_task("training", total=config.epochs, completed=first_epoch - 1)
        within = bar.add_task("epoch", total=steps)
        for epoch in range(first_epoch, config.epochs + 1):
            epoch_started = time.perf_counter()
            bar.reset(within, total=steps, description=f"epoch {epoch}")

            def advance(loss: float, epoch: int = epoch) -> None:
                bar.update(within, advance=1, description=f"epoch {epoch} loss {loss:.3f}")

            patches = _patches(train_items, setup, config, epoch)
            loss = _train_epoch(network, optimizer, loss_fn, patches, config, epoch, device, advance)
            dice = evaluate(network, val_items, setup, config, device)
            record = EpochRecord(epoch=epoch, loss=round(loss, 5), dice=dice, seconds=round(time.perf_counter() - epoch_started, 2))
            history.append(record)
            bar.update(overall, advance=1, description=f"epoch {epoch}/{config.epochs}: loss {loss:.3f}, held-out Dice "
                       + ", ".join(f"{k} {v:.3f}" for k, v in dice.items()))
            _save_checkpoint(run_dir, {
                "epoch": epoch,
                "model": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": [h.model_dump() for h in history],
                "split": {"train": train_ids, "val": val_ids},
                "setup": setup.model_dump(mode="json"),
            })
    final = history[-1].dice  # epochs >= 1, and a resume never starts past config.epochs + 1
    training = {
        "epochs": config.epochs,
        "train_cases": len(train_ids),
        "val_cases": len(val_ids),
        "val_dice": final,
        "fine_tuned_from": str(config.from_bundle) if config.from_bundle else None,
        "summary": f"{config.epochs} epochs on {len(train_ids)} cases; held-out Dice "
                   + ", ".join(f"{k} {v:.3f}" for k, v in final.items()),
    }
    version = write_bundle(run_dir / "bundle", setup, network, config, training)
    result = TrainResult(
        bundle_dir=run_dir / "bundle",
        run_dir=run_dir,
        version=version,
        first_epoch=first_epoch,
        last_epoch=config.epochs,
        train_cases=train_ids,
        val_cases=val_ids,
        dice=final,
        history=history,
        seconds=round(time.perf_counter() - started, 2),
    )
    (run_dir / "metrics.json").write_text(result.model_dump_json(indent=2))
    log.info("bundle %s written to %s; held-out Dice %s", version, result.bundle_dir, final)
    return result
