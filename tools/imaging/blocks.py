"""Block means: a volume on a coarser grid, for the steps that decide topology or density, not edges."""

from __future__ import annotations

import itertools

import numpy as np


def block_mean(hu: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Average HU over blocks of ``factors`` voxels (edges padded by repetition)."""
    pad = [(0, (-n) % f) for n, f in zip(hu.shape, factors, strict=True)]
    data = np.pad(hu, pad, mode="edge") if any(p[1] for p in pad) else hu
    fz, fy, fx = factors
    out = np.zeros(tuple(n // f for n, f in zip(data.shape, factors, strict=True)), dtype=np.float32)
    for dz, dy, dx in itertools.product(range(fz), range(fy), range(fx)):
        out += data[dz::fz, dy::fy, dx::fx]
    out /= float(fz * fy * fx)
    return out
