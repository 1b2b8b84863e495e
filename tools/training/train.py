"""Train or fine-tune a MONAI UNet on the cases in a folder; write a bundle the engine loads.

The run directory holds everything of one run:

    checkpoints/last.pt   model, optimizer, history and split after the latest finished epoch
    run.json              the configuration and split (what a resume must match)
    metrics.json          loss and held-out Dice per epoch, final Dice per structure
    bundle/               the MONAI bundle (configs/inference.json, configs/metadata.json,
                          models/model.pt): set IMAGING_AGENT_MONAI_BUNDLE_DIR to it

Training uses DiceCE loss (MONAI `DiceCELoss`) on patches drawn by `tools.training.inputs`,
and measures held-out Dice after every epoch (`tools.training.evaluate`).

Each epoch draws its patches and batch order from (seed, epoch), so a run resumed from its
checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from tools.training.bundle import write_bundle
from tools.training.config import TooFewCasesError, TrainConfig, TrainingError
from tools.training.dataset import list_cases, read_case, read_skipped, split_cases
from tools.training.evaluate import evaluate
from tools.training.inputs import epoch_patches, prepared
from tools.training.network import NetworkSetup, network_setup, train_device

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.pt"


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


def _too_few(cases_dir: Path, found: int, needed: int) -> TooFewCasesError:
    skipped = read_skipped(cases_dir)
    lines = [f"  - series {s.get('series_instance_uid', '?')} (study {s.get('study_instance_uid', '?')}): {s.get('reason', '?')}" for s in skipped]
    why = ("\nSkipped when gathering:\n" + "\n".join(lines)) if lines else "\nNo case was skipped: the PACS holds no more approved results."
    return TooFewCasesError(
        f"found {found} training case(s) in {cases_dir}, need at least {needed} (some to train on and at least one "
        f"held out to measure Dice). Approve more results, or store contours a radiologist made, then gather again."
        f"{why}"
    )


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


def _load_checkpoint(run_dir: Path, setup: NetworkSetup, device: torch.device) -> dict[str, Any]:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise TrainingError(f"nothing to resume in {run_dir}: {CHECKPOINT} does not exist. Run without --resume to start.")
    state = torch.load(path, map_location=device, weights_only=True)
    saved = NetworkSetup.model_validate(state["setup"])
    if saved != setup:
        raise TrainingError(
            f"the checkpoint {path} was made for another network or input convention "
            f"(pixdim {saved.pixdim}, roi {saved.roi_size}, network {saved.network_def.get('_target_')} "
            f"{saved.network_def.get('channels', '')}) than this run asks for; resume with the same options, "
            "or train into a new --out folder."
        )
    return state


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
    device = train_device(config)
    torch.manual_seed(config.seed)
    setup, network = network_setup(config, device)
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
    train_items = [prepared(read_case(by_id[c]), setup) for c in train_ids]
    val_items = [prepared(read_case(by_id[c]), setup) for c in val_ids]
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

            patches = epoch_patches(train_items, setup, config, epoch)
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
