"""How a volume's array axes lie in the patient, and views of the array along the patient's axes.

The one place that decides which patient direction each array axis runs along (DICOM
PS3.3 C.7.6.2.1.1, LPS: x towards the patient's left, y posterior, z superior). Every
engine and the previews view volumes through it, so an oblique series is treated the same
way everywhere (docs/architecture.md, one owner per concept):

- Each array axis is taken along the patient axis it is nearest to: of the six one-to-one
  assignments of array axes to patient axes, the one with the largest summed |cosine|.
- A view only swaps and flips axes, never resamples, so a mask drawn on a view maps back
  onto the source grid voxel for voxel (`Reorientation.backward`).

Directions are written with the letters of the patient's sides an index runs towards:
L/R (x), P/A (y), S/I (z). "SPL" is a view whose axis 0 runs towards superior, axis 1
towards posterior and axis 2 towards the patient's left.

Not highdicom's `Volume` (looked at in highdicom 0.28.2, the newest release): its
`to_patient_orientation` makes the forward view, but gives no exact inverse for masks
(`match_orientation` re-derives the axes of the view), picks each axis' nearest patient
direction greedily in axis order, and refuses direction cosines orthogonal only to 1e-3,
which the volume assembler accepts (tools/imaging/volume.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tools.imaging.geometry import Geometry

Direction = Literal["L", "R", "P", "A", "S", "I"]
# Per patient component (LPS x, y, z): the letter towards +, the letter towards -.
_LETTERS: tuple[tuple[Direction, Direction], ...] = (("L", "R"), ("P", "A"), ("S", "I"))
_COMPONENT: dict[str, tuple[int, int]] = {
    letter: (component, sign)
    for component, pair in enumerate(_LETTERS)
    for letter, sign in zip(pair, (1, -1), strict=True)
}
OPPOSITE: dict[Direction, Direction] = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}
SIDE_NAMES: dict[Direction, str] = {
    "L": "left", "R": "right", "P": "posterior", "A": "anterior", "S": "superior", "I": "inferior",
}


def array_axis_directions(geometry: Geometry) -> np.ndarray:
    """Row a: the LPS unit vector along which index a of a (slices, rows, columns) array grows."""
    column_dir, row_dir, slice_dir = (np.asarray(v, dtype=float) for v in geometry.direction)
    return np.stack([slice_dir, row_dir, column_dir])


def array_axis_spacing(geometry: Geometry) -> tuple[float, float, float]:
    """Voxel size (mm) along the (slices, rows, columns) array axes."""
    column_mm, row_mm, slice_mm = geometry.spacing
    return (float(slice_mm), float(row_mm), float(column_mm))


def _patient_components(directions: np.ndarray) -> tuple[int, int, int]:
    """For array axes 0, 1, 2: the patient component (0 x, 1 y, 2 z) each is assigned, one-to-one."""
    best = max(
        itertools.permutations(range(3)),
        key=lambda components: sum(abs(directions[a, components[a]]) for a in range(3)),
    )
    return (best[0], best[1], best[2])


def nearest_directions(geometry: Geometry) -> tuple[Direction, Direction, Direction]:
    """The patient direction each array axis (slices, rows, columns) runs nearest to, e.g. ("S", "P", "L")."""
    directions = array_axis_directions(geometry)
    components = _patient_components(directions)
    return tuple(  # type: ignore[return-value]
        _LETTERS[c][0 if directions[a, c] > 0 else 1] for a, c in enumerate(components)
    )


@dataclass(frozen=True)
class Reorientation:
    """A view of a (slices, rows, columns) array with its axes along chosen patient directions.

    View axis ``a`` is source array axis ``perm[a]``, reversed where ``flip[a]``.
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    spacing: tuple[float, float, float]
    """voxel size (mm) along each view axis"""
    shape: tuple[int, int, int]
    """shape of the view"""

    def forward(self, array: np.ndarray) -> np.ndarray:
        """The view of ``array`` (source layout). A numpy view: writing into it writes the source."""
        view = np.transpose(array, self.perm)
        return view[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]

    def backward(self, array: np.ndarray) -> np.ndarray:
        """An array in view layout (a mask, labels) back in the source layout, contiguous."""
        unflipped = array[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]
        return np.ascontiguousarray(np.transpose(unflipped, np.argsort(self.perm)))

    def steps_mm(self, geometry: Geometry) -> np.ndarray:
        """3x3, column a: the LPS step (mm) of one voxel along view axis a of ``geometry``'s array."""
        directions = array_axis_directions(geometry)
        return np.stack(
            [directions[p] * (-s if f else s) for p, s, f in zip(self.perm, self.spacing, self.flip, strict=True)], axis=1
        )

    def view_index(self, axis: int, source_index: int) -> int:
        """Index along view ``axis`` of the plane at ``source_index`` along its source axis."""
        return self.shape[axis] - 1 - source_index if self.flip[axis] else source_index


def reorient(geometry: Geometry, target: str) -> Reorientation:
    """The view whose axes run towards the three directions of ``target`` (e.g. "SPL", "RAS").

    Raises:
        ValueError: ``target`` is not three letters naming the three patient axes once each.
    """
    wanted = [_COMPONENT.get(letter) for letter in target]
    if len(target) != 3 or None in wanted or sorted(w[0] for w in wanted if w) != [0, 1, 2]:
        raise ValueError(f"orientation {target!r} must name x (L/R), y (P/A) and z (S/I) once each, e.g. 'SPL'")
    directions = array_axis_directions(geometry)
    components = _patient_components(directions)
    source_spacing = array_axis_spacing(geometry)
    perm: list[int] = []
    flip: list[bool] = []
    for component, sign in wanted:  # type: ignore[misc]
        axis = components.index(component)
        perm.append(axis)
        flip.append(bool(directions[axis, component] * sign < 0))
    return Reorientation(
        perm=(perm[0], perm[1], perm[2]),
        flip=(flip[0], flip[1], flip[2]),
        spacing=(source_spacing[perm[0]], source_spacing[perm[1]], source_spacing[perm[2]]),
        shape=(geometry.shape[perm[0]], geometry.shape[perm[1]], geometry.shape[perm[2]]),
    )
