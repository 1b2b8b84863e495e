"""Mask slices <-> closed planar contours: exact round trips, holes, islands, geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from tools.imaging.geometry import Geometry
from tools.results.contours import (
    contours_to_mask,
    mask_to_contours,
    rasterise_polygons,
    slice_polygons,
)

pytestmark = pytest.mark.unit

AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, columns = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 <= radius**2


def donut_and_islands(shape: tuple[int, int] = (64, 80)) -> np.ndarray:
    """A ring (one hole) plus two separate islands on one slice."""
    ring = disk(shape, (30, 30), 18) & ~disk(shape, (30, 30), 8)
    return ring | disk(shape, (12, 65), 6) | disk(shape, (48, 66), 5)


def oblique_geometry(shape: tuple[int, int, int]) -> Geometry:
    """Rows run obliquely, non-square pixels: nothing here is an axial identity."""
    angle = math.radians(25)
    row = (math.cos(angle), math.sin(angle), 0.0)
    column = (0.0, 0.0, -1.0)
    normal = tuple(float(v) for v in np.cross(row, column))
    return Geometry(origin=(12.5, -40.0, 85.0), spacing=(0.6, 0.9, 2.0), direction=(row, column, normal), shape=shape)


def test_donut_and_two_islands_are_four_contours_and_come_back_exactly() -> None:
    mask = donut_and_islands()
    polygons = slice_polygons(mask)
    assert len(polygons) == 4  # outer ring, its hole, two islands
    assert np.array_equal(rasterise_polygons(polygons, mask.shape), mask)


def test_island_inside_a_hole_follows_the_even_odd_rule() -> None:
    shape = (60, 60)
    mask = (disk(shape, (30, 30), 25) & ~disk(shape, (30, 30), 15)) | disk(shape, (30, 30), 6)
    polygons = slice_polygons(mask)
    assert len(polygons) == 3
    assert np.array_equal(rasterise_polygons(polygons, shape), mask)


def test_rasteriser_uses_even_odd_for_overlapping_polygons() -> None:
    outer = np.array([[1.5, 1.5], [8.5, 1.5], [8.5, 8.5], [1.5, 8.5]])
    inner = np.array([[3.5, 3.5], [6.5, 3.5], [6.5, 6.5], [3.5, 6.5]])
    filled = rasterise_polygons([outer, inner], (10, 10))
    expected = np.zeros((10, 10), dtype=bool)
    expected[2:9, 2:9] = True
    expected[4:7, 4:7] = False
    assert np.array_equal(filled, expected)


@pytest.mark.parametrize("seed", range(20))
def test_random_masks_round_trip_pixel_exactly(seed: int) -> None:
    """Noise, saddle points (diagonal neighbours), one-pixel specks and image borders."""
    rng = np.random.default_rng(seed)
    mask = rng.random((37, 53)) < rng.uniform(0.15, 0.85)
    if seed % 2:
        mask = ndimage.binary_opening(mask)
    mask[:, 0] |= seed % 3 == 0  # foreground touching the image edge
    assert np.array_equal(rasterise_polygons(slice_polygons(mask), mask.shape), mask)


def test_empty_and_full_slices() -> None:
    assert slice_polygons(np.zeros((8, 8), dtype=bool)) == []
    full = np.ones((8, 9), dtype=bool)
    polygons = slice_polygons(full)
    assert len(polygons) == 1
    assert np.array_equal(rasterise_polygons(polygons, full.shape), full)


def test_collinear_vertices_are_dropped() -> None:
    square = np.zeros((40, 40), dtype=bool)
    square[5:35, 10:30] = True
    (polygon,) = slice_polygons(square)
    # A rectangle keeps its 4 sides and 4 cut corners, not one vertex per boundary pixel.
    assert len(polygon) == 8


def test_contour_points_lie_on_their_slice_plane_in_an_oblique_grid() -> None:
    shape = (6, 40, 50)
    geometry = oblique_geometry(shape)
    mask = np.zeros(shape, dtype=bool)
    for k in range(1, 5):
        mask[k] = donut_and_islands((40, 50)) if k % 2 else disk((40, 50), (20, 25), 10 + k)
    contours = mask_to_contours(mask, geometry)
    assert {c.slice_index for c in contours} == {1, 2, 3, 4}
    normal = np.asarray(geometry.direction[2])
    for contour in contours:
        plane_point = np.asarray(geometry.slice_position(contour.slice_index))
        assert np.abs((contour.points - plane_point) @ normal).max() < 1e-9
    assert np.array_equal(contours_to_mask([c.points for c in contours], geometry), mask)


def test_contours_follow_the_full_geometry() -> None:
    """A pixel's outline is centred on that pixel's patient position, whatever the orientation."""
    shape = (3, 20, 30)
    geometry = oblique_geometry(shape)
    mask = np.zeros(shape, dtype=bool)
    mask[2, 7, 11] = True
    (contour,) = mask_to_contours(mask, geometry)
    assert contour.slice_index == 2
    centre = geometry.index_to_patient(np.array([11.0, 7.0, 2.0]))
    assert np.allclose(contour.points.mean(axis=0), centre)
    # The diamond's corners are half a pixel along the row (0.6 mm) and column (0.9 mm) axes.
    distances = sorted(np.linalg.norm(contour.points - centre, axis=1).round(6))
    assert distances == [0.3, 0.3, 0.45, 0.45]


@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_patient_right_comes_out_at_negative_x(position: str) -> None:
    """Axial identity orientation, as GE writes it for HFS and FFS alike (LIDC-IDRI-0001 is FFS):
    columns run towards the patient's left, so the patient's right side is at low column
    indices, and must come out at negative x in LPS whatever the slice order."""
    z_direction = (0.0, 0.0, 1.0) if position == "HFS" else (0.0, 0.0, -1.0)
    geometry = Geometry(
        origin=(-100.0, -120.0, 50.0),
        spacing=(0.8, 0.8, 2.5),
        direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), z_direction),
        shape=(4, 250, 250),
    )
    mask = np.zeros(geometry.shape, dtype=bool)
    mask[1:3, 100:150, 20:80] = True  # columns 20-80 of 250: the patient's right
    contours = mask_to_contours(mask, geometry)
    points = np.concatenate([c.points for c in contours])
    assert points[:, 0].max() < 0
    assert np.array_equal(contours_to_mask([c.points for c in contours], geometry), mask)


def test_three_dimensional_round_trip_on_anisotropic_grid() -> None:
    shape = (12, 48, 64)
    geometry = Geometry(origin=(-30.0, -20.0, 7.0), spacing=(0.5, 1.25, 3.0), direction=AXIAL, shape=shape)
    k, r, c = np.ogrid[: shape[0], : shape[1], : shape[2]]
    mask = ((k - 6) / 5.0) ** 2 + ((r - 24) / 18.0) ** 2 + ((c - 30) / 25.0) ** 2 <= 1.0
    mask &= ~(((r - 24) / 6.0) ** 2 + ((c - 30) / 6.0) ** 2 <= 1.0)  # a tube through it: holes
    contours = mask_to_contours(mask, geometry)
    assert np.array_equal(contours_to_mask([c.points for c in contours], geometry), mask)


def test_contour_off_every_slice_is_refused() -> None:
    geometry = Geometry(origin=(0.0, 0.0, 0.0), spacing=(1.0, 1.0, 2.0), direction=AXIAL, shape=(3, 10, 10))
    between_slices = np.array([[1.0, 1.0, 1.0], [5.0, 1.0, 1.0], [5.0, 5.0, 1.0]])
    with pytest.raises(ValueError, match="does not lie on a slice"):
        contours_to_mask([between_slices], geometry)
    beyond = between_slices + [0.0, 0.0, 9.0]
    with pytest.raises(ValueError, match="does not lie on a slice"):
        contours_to_mask([beyond], geometry)


def test_mask_of_wrong_shape_is_refused() -> None:
    geometry = Geometry(origin=(0.0, 0.0, 0.0), spacing=(1.0, 1.0, 1.0), direction=AXIAL, shape=(3, 10, 10))
    with pytest.raises(ValueError, match="does not match"):
        mask_to_contours(np.zeros((3, 10, 11), dtype=bool), geometry)
