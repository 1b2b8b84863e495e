"""Views of a volume along the patient axes: which directions, exact round trips, patient positions kept."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tools.imaging.geometry import Geometry
from tools.imaging.orientation import nearest_directions, reorient

pytestmark = pytest.mark.unit

# (row direction X, column direction Y, slice direction Z): the columns, rows and slices axes.
GEOMETRIES = {
    "head-first": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "feet-first": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "prone": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), (1.0, 0.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, -1.0, 0.0)),
}
EXPECTED = {
    "head-first": ("S", "P", "L"),
    "feet-first": ("I", "P", "R"),
    "prone": ("S", "A", "R"),
    "sagittal": ("L", "I", "P"),
    "coronal": ("A", "I", "L"),
}


def geometry(direction: tuple, shape: tuple[int, int, int] = (5, 6, 7)) -> Geometry:
    return Geometry(origin=(3.0, -2.0, 10.0), spacing=(0.7, 0.9, 2.5), direction=direction, shape=shape)


def oblique(degrees: float) -> Geometry:
    """Axial slices whose rows and columns are turned ``degrees`` about the patient's z axis."""
    a = math.radians(degrees)
    return geometry(((math.cos(a), math.sin(a), 0.0), (-math.sin(a), math.cos(a), 0.0), (0.0, 0.0, 1.0)))


def patient(g: Geometry) -> np.ndarray:
    """(slices, rows, columns, 3): the LPS position of every voxel."""
    k, j, i = np.indices(g.shape)
    return g.index_to_patient(np.stack([i, j, k], axis=-1).reshape(-1, 3)).reshape(*g.shape, 3)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_nearest_directions(name: str) -> None:
    assert nearest_directions(geometry(GEOMETRIES[name])) == EXPECTED[name]


def test_an_oblique_series_takes_the_nearest_patient_axes() -> None:
    assert nearest_directions(oblique(30)) == ("S", "P", "L")
    assert nearest_directions(oblique(-40)) == ("S", "P", "L")
    assert nearest_directions(oblique(60)) == ("S", "R", "P")


@pytest.mark.parametrize("name", GEOMETRIES)
@pytest.mark.parametrize("target", ["SPL", "RAS", "IPL", "LIA"])
def test_views_run_towards_the_target_and_come_back_exactly(name: str, target: str) -> None:
    g = geometry(GEOMETRIES[name])
    view = reorient(g, target)
    source = patient(g)
    positions = np.stack([view.forward(source[..., c]) for c in range(3)], axis=-1)
    assert view.forward(np.zeros(g.shape)).shape == view.shape
    sign = {"L": 1, "R": -1, "P": 1, "A": -1, "S": 1, "I": -1}
    component = {"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}
    for axis, letter in enumerate(target):
        steps = np.diff(positions[..., component[letter]], axis=axis) * sign[letter]
        assert np.allclose(steps, view.spacing[axis]), (axis, letter)
        # One step along the view axis moves by that column of steps_mm, in patient space.
        moved = np.diff(positions, axis=axis).reshape(-1, 3)
        assert np.allclose(moved, view.steps_mm(g)[:, axis])
    array = np.random.default_rng(0).integers(0, 1000, g.shape)
    assert np.array_equal(view.backward(view.forward(array)), array)
    for axis in range(3):
        source_axis = view.perm[axis]
        for index in (0, g.shape[source_axis] - 1):
            plane = np.take(view.forward(array), view.view_index(axis, index), axis=axis)
            assert np.array_equal(np.sort(plane, axis=None), np.sort(np.take(array, index, axis=source_axis), axis=None))


def test_forward_is_a_view_of_the_source() -> None:
    g = geometry(GEOMETRIES["feet-first"])
    array = np.zeros(g.shape, dtype=bool)
    reorient(g, "SPL").forward(array)[0, 0, 0] = True
    assert array[-1, 0, -1]  # the most superior slice, the patient's rightmost column


@pytest.mark.parametrize("target", ["SPX", "SPS", "SP", "SPLA"])
def test_a_target_must_name_each_patient_axis_once(target: str) -> None:
    with pytest.raises(ValueError, match="once each"):
        reorient(geometry(GEOMETRIES["head-first"]), target)


def test_every_permutation_and_flip_of_the_axes_is_undone() -> None:
    base = geometry(GEOMETRIES["head-first"])
    rng = np.random.default_rng(1)
    for perm in itertools.permutations(range(3)):
        directions = [np.asarray(d) for d in (base.direction[2], base.direction[1], base.direction[0])]
        for flips in itertools.product((False, True), repeat=3):
            axes = [directions[p] * (-1 if f else 1) for p, f in zip(perm, flips, strict=True)]
            g = geometry((tuple(axes[2]), tuple(axes[1]), tuple(axes[0])))
            view = reorient(g, "SPL")
            assert view.perm == tuple(perm.index(a) for a in (0, 1, 2))
            array = rng.integers(0, 9, g.shape)
            assert np.array_equal(view.backward(view.forward(array)), array)
