"""Agreement between a mask and a reference mask on the same grid: Dice and surface distances.

Surface distances use the true voxel spacing (mm per array axis), so anisotropic grids
(0.98 x 0.98 x 3 mm CT) are measured in millimetres, not voxels. The surface of a mask is
its voxels with at least one 6-connected neighbour outside it (a voxel on the array's edge
counts as surface: the mask is cut there). Distances from each surface voxel of one mask to
the nearest surface voxel of the other come from a Euclidean distance transform (scipy).

- HD95: the larger of the two directed 95th percentiles (as MONAI's
  ``compute_hausdorff_distance(percentile=95)``), so neither mask's outliers hide behind
  the other's well-fitting surface.
- MSD: the mean over both directions' distances together (symmetric mean surface distance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Spacing = tuple[float, float, float]

# Room around the two masks' common box, so the distance transform is not cut at the box.
_BOX_PAD_VOXELS = 2
# A manual slice under this share of both neighbours' area was skipped, not drawn small.
_GAP_FRACTION = 0.1


@dataclass(frozen=True)
class Agreement:
    """Dice and surface distances (mm) of a mask against its reference; inf when either is empty."""

    dice: float
    hd95_mm: float
    msd_mm: float
    volume_ml: float
    reference_ml: float


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|); 1.0 when both are empty."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * float(np.count_nonzero(a & b)) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 6-connected neighbour outside it (or on the array's edge)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def directed_distances(a: np.ndarray, b: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Distance (mm) from each surface voxel of ``a`` to the nearest surface voxel of ``b``."""
    to_b = ndimage.distance_transform_edt(~surface(b), sampling=spacing)
    return to_b[surface(a)]


def agreement(mask: np.ndarray, reference: np.ndarray, spacing: Spacing) -> Agreement:
    """Dice, HD95 and MSD of ``mask`` against ``reference`` (bool arrays, same grid and axes as ``spacing``)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volume, ref_volume = np.count_nonzero(mask) * voxel_ml, np.count_nonzero(reference) * voxel_ml
    if not mask.any() or not reference.any():
        return Agreement(dice(mask, reference), float("inf"), float("inf"), volume, ref_volume)
    box = _common_box(mask, reference)
    a, b = mask[box], reference[box]
    forward, backward = directed_distances(a, b, spacing), directed_distances(b, a, spacing)
    hd95 = max(float(np.percentile(forward, 95)), float(np.percentile(backward, 95)))
    msd = float(np.concatenate([forward, backward]).mean())
    return Agreement(dice(a, b), hd95, msd, volume, ref_volume)


def _common_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    box = ndimage.find_objects((a | b).view(np.uint8))[0]
    return tuple(
        slice(max(0, s.start - _BOX_PAD_VOXELS), min(n, s.stop + _BOX_PAD_VOXELS)) for s, n in zip(box, a.shape, strict=True)
    )


def fill_missing_slices(reference: np.ndarray, spacing: Spacing) -> tuple[np.ndarray, list[int]]:
    """A manual reference with its skipped slices filled in, and the indices of those slices.

    Manual contours are drawn slice by slice and a slice is sometimes skipped or left with a
    stray dot (nsclc-lung1-001's `Lung L` holds 3 pixels at z = -552.5 mm between two slices
    of 15,500). Scoring against such a gap punishes a correct mask by a whole slice and puts
    the reference's surface across the lung. A slice counts as skipped when its area is under
    ``_GAP_FRACTION`` of both neighbours'; it is filled by shape-based interpolation (the mean
    of the neighbours' signed in-plane distance maps), which is how planning systems
    interpolate between contoured slices. Axis 0 must be the slice axis.
    """
    areas = np.count_nonzero(reference, axis=(1, 2))
    out = reference.copy()
    gaps: list[int] = []
    for k in range(1, reference.shape[0] - 1):
        neighbours = min(areas[k - 1], areas[k + 1])
        if neighbours > 0 and areas[k] < _GAP_FRACTION * neighbours:
            signed = _signed_distance(reference[k - 1], spacing[1:]) + _signed_distance(reference[k + 1], spacing[1:])
            out[k] = signed < 0
            gaps.append(k)
    return out, gaps


def _signed_distance(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """In-plane signed distance (mm): negative inside ``mask``, positive outside."""
    return ndimage.distance_transform_edt(~mask, sampling=spacing) - ndimage.distance_transform_edt(mask, sampling=spacing)
