"""What a training run is asked to do, and the errors that stop one."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from tools.training.dataset import DEFAULT_PIXDIM


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


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message names the folder or file and what to do."""


class TooFewCasesError(TrainingError):
    """Fewer usable cases than the configured minimum."""
