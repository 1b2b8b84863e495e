"""Preview PNGs: files, sizes, outline colours, and radiological orientation from the geometry.

Masks are drawn by patient coordinates (LPS) computed from each test volume's geometry, so
"the patient's right" means x < 0 whatever the orientation of rows, columns and slices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools.imaging.geometry import Geometry
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.phantom import PhantomSpec, make_phantom, write_phantom
from tools.results.previews import render_previews
from tools.review.slice_view import LEGEND_HEIGHT_PX
from tools.segmentation.base import STRUCTURES, SegmentationResult, StructureMask

pytestmark = pytest.mark.unit

NAMES = ["axial_1.png", "axial_2.png", "axial_3.png", "coronal.png"]
LEFT = STRUCTURES["left-lung"].color_rgb
RIGHT = STRUCTURES["right-lung"].color_rgb

# (row direction X, column direction Y, slice direction Z) of a few acquisitions.
ORIENTATIONS = {
    "head-first": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "feet-first-slices": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "columns-to-patient-right": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "prone": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
}


def synthetic_volume(direction: tuple, spacing: tuple[float, float, float] = (1.5, 1.5, 4.0)) -> Volume:
    """A 30 x 96 x 80 air volume with a soft-tissue body, centred on the patient origin."""
    slices, rows, columns = 30, 96, 80
    axes = np.asarray(direction) * np.asarray(spacing)[:, None]
    centre = np.array([(columns - 1) / 2, (rows - 1) / 2, (slices - 1) / 2])
    origin = -(centre @ axes)
    geometry = Geometry(
        origin=tuple(float(v) for v in origin), spacing=spacing, direction=direction, shape=(slices, rows, columns)
    )
    x, y, _ = patient_coordinates(geometry)
    body = (x / 55.0) ** 2 + (y / 45.0) ** 2 < 1.0
    array = np.where(body, 40, -1000).astype(np.int16)
    return Volume(
        array=array, geometry=geometry, series_instance_uid="1.2.3.4", study_instance_uid="1.2.3",
        frame_of_reference_uid="1.2.3.5", modality="CT", sop_instance_uids=[f"1.2.3.4.{k}" for k in range(slices)],
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    )


def patient_coordinates(geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k, j, i = np.indices(geometry.shape)
    xyz = geometry.index_to_patient(np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1))
    return tuple(xyz[:, a].reshape(geometry.shape) for a in range(3))  # type: ignore[return-value]


def one_structure(mask: np.ndarray, key: str = "right-lung") -> SegmentationResult:
    return SegmentationResult("lung-threshold", "1.0.0", [StructureMask(STRUCTURES[key], mask, 0.9)])


def colour_pixels(path: Path, colour: tuple[int, int, int]) -> np.ndarray:
    """(row, column) of every pixel of exactly ``colour`` in the CT area (legend strip excluded)."""
    image = np.asarray(Image.open(path).convert("RGB"))[:-LEGEND_HEIGHT_PX]
    return np.argwhere(np.all(image == np.asarray(colour, dtype=np.uint8), axis=-1))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the CT area."""
    with Image.open(path) as image:
        return image.width, image.height - LEGEND_HEIGHT_PX


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_patient_right_is_on_the_image_left(orientation: str, tmp_path: Path) -> None:
    volume = synthetic_volume(ORIENTATIONS[orientation])
    x, y, z = patient_coordinates(volume.geometry)
    mask = ((x + 25.0) / 15.0) ** 2 + (y / 20.0) ** 2 + (z / 40.0) ** 2 < 1.0  # centred 25 mm to the right
    paths = render_previews(volume, one_structure(mask), tmp_path)
    for path in paths:
        width, _ = image_size(path)
        columns = colour_pixels(path, RIGHT)[:, 1]
        assert columns.size > 20, path.name
        assert columns.max() < width / 2, path.name


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_anterior_is_up_on_axial_and_superior_is_up_on_coronal(orientation: str, tmp_path: Path) -> None:
    volume = synthetic_volume(ORIENTATIONS[orientation])
    x, y, z = patient_coordinates(volume.geometry)
    # Anterior (y < 0) and superior (z > 0) of the centre, left of the midline.
    mask = ((x - 20.0) / 15.0) ** 2 + ((y + 20.0) / 12.0) ** 2 + ((z - 25.0) / 20.0) ** 2 < 1.0
    paths = render_previews(volume, one_structure(mask, "left-lung"), tmp_path)
    for path in paths:
        width, height = image_size(path)
        pixels = colour_pixels(path, LEFT)
        assert pixels.size > 0, path.name
        assert pixels[:, 1].min() > width / 2, path.name  # patient left on the image right
        assert pixels[:, 0].max() < height / 2, path.name  # anterior / superior at the top


def test_files_sizes_and_aspect_ratio(tmp_path: Path) -> None:
    # Non-square pixels (1.5 mm columns, 0.75 mm rows) and 4 mm slices.
    volume = synthetic_volume(ORIENTATIONS["head-first"], spacing=(1.5, 0.75, 4.0))
    x, y, z = patient_coordinates(volume.geometry)
    mask = (x / 30.0) ** 2 + (y / 20.0) ** 2 + (z / 40.0) ** 2 < 1.0
    paths = render_previews(volume, one_structure(mask), tmp_path / "out")
    assert [p.name for p in paths] == NAMES
    assert all(p.is_file() and 1_000 < p.stat().st_size < 3_000_000 for p in paths)
    slices, rows, columns = volume.array.shape
    axial_w, axial_h = image_size(paths[0])
    assert axial_w / axial_h == pytest.approx((columns * 1.5) / (rows * 0.75), rel=0.01)
    coronal_w, coronal_h = image_size(paths[3])
    assert coronal_w / coronal_h == pytest.approx((columns * 1.5) / (slices * 4.0), rel=0.01)
    assert 512 <= max(axial_w, axial_h) <= 1024 and 512 <= max(coronal_w, coronal_h) <= 1024
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB"


def test_outlines_not_fills(tmp_path: Path) -> None:
    volume = synthetic_volume(ORIENTATIONS["head-first"])
    x, y, z = patient_coordinates(volume.geometry)
    mask = (x / 30.0) ** 2 + (y / 25.0) ** 2 + (z / 50.0) ** 2 < 1.0
    paths = render_previews(volume, one_structure(mask), tmp_path)
    pixels = colour_pixels(paths[1], RIGHT)
    width, height = image_size(paths[1])
    scale = width / volume.array.shape[2]
    # The outline of a 60 x 50 mm ellipse: its perimeter times a 2 px line, far below its area.
    area_px = np.pi * (30.0 / 1.5 * scale) * (25.0 / 1.5 * scale)
    assert 0 < len(pixels) < 0.25 * area_px
    centre = np.asarray(Image.open(paths[1]).convert("RGB"))[height // 2, width // 2]
    assert tuple(centre) != RIGHT


def test_axial_slices_span_the_structure_from_the_top(tmp_path: Path) -> None:
    volume = synthetic_volume(ORIENTATIONS["feet-first-slices"])
    x, y, z = patient_coordinates(volume.geometry)
    mask = (x / 30.0) ** 2 + (y / 25.0) ** 2 < 1.0
    mask &= np.abs(z) < 40.0
    paths = render_previews(volume, one_structure(mask), tmp_path)
    for path in paths[:3]:
        assert colour_pixels(path, RIGHT).size > 0, path.name
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_rendering_is_deterministic_and_empty_masks_are_fine(tmp_path: Path) -> None:
    volume = synthetic_volume(ORIENTATIONS["prone"])
    empty = one_structure(np.zeros(volume.array.shape, dtype=bool))
    first = render_previews(volume, empty, tmp_path / "a")
    second = render_previews(volume, empty, tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert all(colour_pixels(p, RIGHT).size == 0 for p in first)


def test_refuses_a_mask_off_the_volume_grid(tmp_path: Path) -> None:
    volume = synthetic_volume(ORIENTATIONS["head-first"])
    with pytest.raises(ValueError, match="1.2.3.4.*right-lung"):
        render_previews(volume, one_structure(np.zeros((2, 2, 2), dtype=bool)), tmp_path)


@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_phantom_lungs_on_the_expected_sides(position: str, tmp_path: Path) -> None:
    spec = PhantomSpec(
        slices=40, rows=128, columns=128, pixel_spacing_mm=3.0, slice_thickness_mm=7.5, patient_position=position
    )
    phantom = make_phantom(spec)
    write_phantom(phantom, tmp_path / "ct")
    volume = assemble_volume(read_series_dir(tmp_path / "ct"))
    result = SegmentationResult(
        "lung-threshold", "1.0.0",
        [StructureMask(STRUCTURES["left-lung"], phantom.left_lung, 1.0),
         StructureMask(STRUCTURES["right-lung"], phantom.right_lung, 1.0)],
    )
    paths = render_previews(volume, result, tmp_path / "png")
    for path in paths:
        width, _ = image_size(path)
        right, left = colour_pixels(path, RIGHT), colour_pixels(path, LEFT)
        assert right.size > 0 and left.size > 0, path.name
        assert right[:, 1].mean() < width / 2 < left[:, 1].mean(), path.name
