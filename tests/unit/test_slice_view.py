"""The viewer's renderer: any plane of a phantom, HFS and FFS, checked pixel by pixel against the masks.

The masks are the phantom's exact lungs; each plane's outline must lie on the mask's border and
cover it, the patient's left must be on the image's right (axial, coronal), superior at the top
(coronal, sagittal) and anterior on the left of sagittal planes, whatever the acquisition.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.viewer_checks import assert_outline_matches, colour_mask
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.phantom import Phantom, PhantomSpec, make_phantom, write_phantom
from tools.review.edits import PLANE_AXIS, EraseRange
from tools.review.scene import Scene
from tools.review.slice_view import PLANES, WINDOW_PRESETS, DisplayMapping, SliceRenderer, Window
from tools.segmentation.base import STRUCTURES, FlagPlanes, QAFlag

pytestmark = pytest.mark.unit

LEFT, RIGHT = STRUCTURES["left-lung"], STRUCTURES["right-lung"]
KEYS = ["left-lung", "right-lung"]


@pytest.fixture(scope="module", params=["HFS", "FFS"])
def phantom_volume(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Phantom, Volume]:
    spec = PhantomSpec(
        slices=32, rows=112, columns=112, pixel_spacing_mm=3.0, slice_thickness_mm=7.5, patient_position=request.param
    )
    phantom = make_phantom(spec)
    folder = tmp_path_factory.mktemp(f"ct-{request.param}")
    write_phantom(phantom, folder)
    return phantom, assemble_volume(read_series_dir(folder))


def renderer_of(phantom: Phantom, volume: Volume) -> SliceRenderer:
    return SliceRenderer(volume.array, volume.geometry, [(LEFT, phantom.left_lung), (RIGHT, phantom.right_lung)])


def lung_planes(renderer: SliceRenderer, plane: str, mask: np.ndarray) -> list[int]:
    axis = PLANE_AXIS[plane]
    others = tuple(a for a in range(3) if a != axis)
    return [int(i) for i in np.flatnonzero(renderer.view.forward(mask).any(axis=others))]


@pytest.mark.parametrize("plane", PLANES)
def test_outlines_lie_on_the_masks_in_every_plane(phantom_volume: tuple[Phantom, Volume], plane: str) -> None:
    phantom, volume = phantom_volume
    renderer = renderer_of(phantom, volume)
    union = phantom.left_lung | phantom.right_lung
    present = lung_planes(renderer, plane, union)
    mapping = renderer.mapping(plane)
    for index in (present[len(present) // 3], present[len(present) // 2], present[2 * len(present) // 3]):
        image = np.asarray(renderer.render(plane, index, WINDOW_PRESETS["lung"], KEYS).convert("RGB"))
        assert image.shape[:2] == (mapping.height + 28, mapping.width)
        for spec, mask in ((LEFT, phantom.left_lung), (RIGHT, phantom.right_lung)):
            cut = renderer.plane(mask, plane, index)
            if cut.any():
                assert_outline_matches(image, cut, mapping, spec.color_rgb)
            else:
                assert not colour_mask(image, spec.color_rgb, mapping).any()


def test_radiological_convention_in_every_plane(phantom_volume: tuple[Phantom, Volume]) -> None:
    phantom, volume = phantom_volume
    renderer = renderer_of(phantom, volume)
    for plane in ("axial", "coronal"):
        planes = lung_planes(renderer, plane, phantom.left_lung)
        index = planes[len(planes) // 2]
        image = np.asarray(renderer.render(plane, index, WINDOW_PRESETS["lung"], KEYS).convert("RGB"))
        mapping = renderer.mapping(plane)
        left_x = np.nonzero(colour_mask(image, LEFT.color_rgb, mapping))[1].mean()
        right_x = np.nonzero(colour_mask(image, RIGHT.color_rgb, mapping))[1].mean()
        assert right_x < mapping.width / 2 < left_x, f"{plane}: the patient's right must be on the image's left"
    # Superior up: the lungs' apices are near the top of coronal and sagittal planes, the bases below.
    for plane in ("coronal", "sagittal"):
        mask = phantom.left_lung if plane == "sagittal" else phantom.left_lung | phantom.right_lung
        planes = lung_planes(renderer, plane, mask)
        index = planes[len(planes) // 2]
        cut = renderer.plane(mask, plane, index)
        rows = np.flatnonzero(cut.any(axis=1))
        z_top, z_bottom = (
            float(volume.geometry.index_to_patient(_ijk(renderer, plane, index, row))[2]) for row in (rows[0], rows[-1])
        )
        assert z_top > z_bottom, f"{plane}: superior must be at the top"
    # Anterior on the left of a sagittal plane: y (LPS, + posterior) grows to the right.
    index = lung_planes(renderer, "sagittal", phantom.left_lung)[5]
    cut = renderer.plane(phantom.left_lung, "sagittal", index)
    columns = np.flatnonzero(cut.any(axis=0))
    y_left, y_right = (
        float(volume.geometry.index_to_patient(_ijk(renderer, "sagittal", index, 0, column))[1])
        for column in (columns[0], columns[-1])
    )
    assert y_left < y_right


def _ijk(renderer: SliceRenderer, plane: str, index: int, row: int, column: int = 0) -> np.ndarray:
    """Geometry (column, row, slice) indices of view voxel (row, column) of view plane ``index``."""
    view = renderer.view
    axis = PLANE_AXIS[plane]
    vertical, horizontal = (a for a in range(3) if a != axis)
    view_index = [0, 0, 0]
    view_index[axis], view_index[vertical], view_index[horizontal] = index, row, column
    source = [0, 0, 0]
    for a in range(3):
        source[view.perm[a]] = view.view_index(a, view_index[a])
    return np.array([source[2], source[1], source[0]], dtype=float)


def test_window_presets_and_hidden_structures(phantom_volume: tuple[Phantom, Volume]) -> None:
    phantom, volume = phantom_volume
    renderer = renderer_of(phantom, volume)
    assert Window(350, 40).apply(np.array([40, -135, 215, -1000, 3000])).tolist() == [127, 0, 255, 0, 255]
    assert WINDOW_PRESETS["bone"] == Window(2000, 500) and WINDOW_PRESETS["mediastinum"] == Window(350, 40)
    index = lung_planes(renderer, "axial", phantom.left_lung)[10]
    mapping = renderer.mapping("axial")
    image = np.asarray(renderer.render("axial", index, WINDOW_PRESETS["bone"], ["right-lung"]).convert("RGB"))
    assert not colour_mask(image, LEFT.color_rgb, mapping).any()
    assert colour_mask(image, RIGHT.color_rgb, mapping).any()
    with pytest.raises(ValueError, match="axial plane 999"):
        renderer.render("axial", 999)


def test_display_mapping_goes_both_ways_exactly() -> None:
    mapping = DisplayMapping(rows=32, columns=112, width=512, height=366)
    for row, column in ((0.0, 0.0), (31.0, 111.0), (12.25, 40.5)):
        x, y = mapping.display_at(row, column)
        assert mapping.voxel_at(x, y) == pytest.approx((row, column), abs=1e-12)
    assert mapping.voxel_at(0, 0) == (-0.5, -0.5)  # the image's corner is the first voxel's corner


def test_title_gives_the_position_in_mm(phantom_volume: tuple[Phantom, Volume]) -> None:
    phantom, volume = phantom_volume
    renderer = renderer_of(phantom, volume)
    top = renderer.position_mm("axial", 0)
    bottom = renderer.position_mm("axial", renderer.count("axial") - 1)
    assert top > bottom  # axial planes run from the head down
    assert f"z {top:.1f} mm" in renderer.title("axial", 0)
    assert renderer.position_mm("sagittal", 0) < renderer.position_mm("sagittal", 1)  # patient's right first


def test_scene_applies_edits_and_finds_a_flags_planes(phantom_volume: tuple[Phantom, Volume]) -> None:
    phantom, volume = phantom_volume
    flag = QAFlag(code="x", severity="warning", structure="left-lung", message="m", planes=FlagPlanes(axis=0, first=10, last=12))
    scene = Scene("phantom", volume.array, volume.geometry, "1.2.3", [(LEFT, phantom.left_lung), (RIGHT, phantom.right_lung)], [flag])
    plane, index = scene.flag_target(flag)
    assert plane == "axial" and scene.renderer.source_index("axial", index) == 11
    planes = lung_planes(scene.renderer, "axial", phantom.left_lung)
    erase = EraseRange(structure="left-lung", plane="axial", first=planes[0], last=planes[-1])
    image = np.asarray(scene.render("axial", planes[len(planes) // 2], WINDOW_PRESETS["lung"], KEYS, [erase]).convert("RGB"))
    assert not colour_mask(image, LEFT.color_rgb, scene.renderer.mapping("axial")).any()
    assert scene.edited([erase]) is not scene.renderer
