"""Measurements and plausibility flags on hand-built masks with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.imaging.geometry import Geometry
from tools.imaging.volume import Volume
from tools.results.package import build_package
from tools.segmentation.base import STRUCTURES, FlagPlanes, QAFlag, SegmentationResult, StructureMask
from tools.segmentation.qa import assess, measure, qa_flags
from tools.segmentation.result_store import load_result, save_result

pytestmark = pytest.mark.unit

SERIES = "1.2.826.0.1.3680043.10.1"
HFS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
# Feet first: columns run to the patient's right, slices go down the patient.
FFS = ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0))


def make_volume(
    shape: tuple[int, int, int] = (20, 30, 30),
    spacing: tuple[float, float, float] = (10.0, 10.0, 10.0),
    direction: tuple[tuple[float, float, float], ...] = HFS,
    hu: np.ndarray | None = None,
) -> Volume:
    """A volume of 10 mm voxels (1 mL each) unless told otherwise."""
    return Volume(
        array=np.zeros(shape, dtype=np.int16) if hu is None else hu,
        geometry=Geometry(origin=(-150.0, -150.0, 0.0), spacing=spacing, direction=direction, shape=shape),  # type: ignore[arg-type]
        series_instance_uid=SERIES,
        study_instance_uid="1.2.3",
        frame_of_reference_uid="1.2.4",
        modality="CT",
        sop_instance_uids=[f"1.2.5.{k}" for k in range(shape[0])],
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    )


def lung(key: str, mask: np.ndarray) -> StructureMask:
    return StructureMask(structure=STRUCTURES[key], mask=mask, confidence=1.0)


def box(shape: tuple[int, int, int], k: slice, r: slice, c: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[k, r, c] = True
    return mask


def codes(flags: list) -> set[tuple[str, str | None]]:
    return {(f.code, f.structure) for f in flags}


def plausible_pair(shape: tuple[int, int, int] = (20, 30, 30)) -> tuple[np.ndarray, np.ndarray]:
    """Two 1.2 L boxes clear of every edge; HFS columns run to the patient's left."""
    left = box(shape, slice(3, 15), slice(5, 25), slice(18, 23))
    right = box(shape, slice(3, 15), slice(5, 25), slice(6, 11))
    return left, right


def test_measure_volume_hu_box_and_components() -> None:
    shape = (10, 12, 14)
    hu = np.full(shape, 40, dtype=np.int16)
    mask = box(shape, slice(2, 4), slice(3, 6), slice(4, 8))  # 2 x 3 x 4 = 24 voxels
    hu[mask] = np.arange(24, dtype=np.int16) * 10 - 900
    volume = make_volume(shape, spacing=(0.5, 0.8, 2.0), hu=hu)
    m = measure(volume, mask)
    assert m.voxel_count == 24
    assert m.volume_ml == pytest.approx(24 * 0.5 * 0.8 * 2.0 / 1000.0)
    values = np.arange(24) * 10 - 900
    assert m.mean_hu == pytest.approx(values.mean())
    assert (m.p5_hu, m.p50_hu, m.p95_hu) == pytest.approx(tuple(np.percentile(values, [5, 50, 95])))
    assert m.bbox_index == ((2, 3), (3, 5), (4, 7))
    # Column i -> x = -150 + 0.5 i, row j -> y = -150 + 0.8 j, slice k -> z = 2 k.
    assert m.bbox_mm is not None
    np.testing.assert_allclose(m.bbox_mm, [(-148.0, -146.5), (-147.6, -146.0), (4.0, 6.0)])
    assert m.n_components == 1


def test_components_count_26_connected_neighbours_as_one() -> None:
    shape = (6, 6, 6)
    mask = np.zeros(shape, dtype=bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # corner to corner: one component
    mask[4, 4, 4] = True
    assert measure(make_volume(shape), mask).n_components == 2


def test_measure_empty_mask_and_wrong_shape() -> None:
    volume = make_volume()
    empty = measure(volume, np.zeros(volume.array.shape, dtype=bool))
    assert (empty.volume_ml, empty.n_components, empty.mean_hu, empty.bbox_index) == (0.0, 0, None, None)
    with pytest.raises(ValueError, match=SERIES):
        measure(volume, np.zeros((2, 2, 2), dtype=bool))


def test_plausible_lungs_give_no_flags() -> None:
    volume = make_volume()
    left, right = plausible_pair()
    assert qa_flags(volume, [lung("left-lung", left), lung("right-lung", right)]) == []


def test_volume_under_300_ml_and_over_9_l() -> None:
    shape = (30, 60, 60)
    volume = make_volume(shape)
    small = box(shape, slice(5, 10), slice(5, 15), slice(35, 40))  # 250 mL
    huge = box(shape, slice(1, 29), slice(1, 59), slice(1, 8))  # 11.4 L
    flags = qa_flags(volume, [lung("left-lung", small), lung("right-lung", huge)])
    # The two lungs also differ in height and volume ratio far beyond the usual.
    assert codes(flags) == {
        ("volume-low", "left-lung"), ("volume-high", "right-lung"),
        ("lung-length-mismatch", "left-lung"), ("lung-volume-ratio", None),
    }
    low = next(f for f in flags if f.code == "volume-low")
    high = next(f for f in flags if f.code == "volume-high")
    assert low.severity == "warning" and high.severity == "fail"
    assert "Left lung" in low.message and "250 mL" in low.message and SERIES in low.message
    assert "Right lung" in high.message and "Check" in high.message


def test_more_than_two_large_components() -> None:
    volume = make_volume()
    left, right = plausible_pair()
    left = left.copy()
    left[8, :, :] = False  # cut in two
    left[11, :, :] = False  # and in three
    speck = box(volume.array.shape, slice(4, 5), slice(5, 6), slice(6, 7))
    flags = qa_flags(volume, [lung("left-lung", left), lung("right-lung", right | speck)])
    assert codes(flags) == {("fragmented", "left-lung")}
    assert "3 large separate parts" in flags[0].message


def test_small_specks_do_not_count_as_large_components() -> None:
    shape = (20, 60, 60)
    volume = make_volume(shape, spacing=(2.0, 2.0, 2.0))  # 8 microlitre voxels
    left = box(shape, slice(2, 18), slice(5, 55), slice(32, 55))
    for c in (1, 3, 5):  # three one-voxel specks: far under 1% and 5 mL
        left[10, 10, c] = True
    right = box(shape, slice(2, 18), slice(5, 55), slice(8, 28))
    assert "fragmented" not in {f.code for f in qa_flags(volume, [lung("left-lung", left), lung("right-lung", right)])}


def test_touching_superior_edge_is_a_warning_lateral_edge_a_failure() -> None:
    volume = make_volume()
    left, right = plausible_pair()
    left = left | box(volume.array.shape, slice(14, 20), slice(10, 12), slice(18, 20))  # up to the last slice
    right = right | box(volume.array.shape, slice(5, 6), slice(10, 12), slice(0, 8))  # out to column 0
    flags = qa_flags(volume, [lung("left-lung", left), lung("right-lung", right)])
    by_code = {f.code: f for f in flags}
    # HFS: the last slice is the most superior, column 0 is the patient's right.
    assert set(by_code) == {"touches-superior-edge", "touches-right-edge"}
    assert by_code["touches-superior-edge"].severity == "warning"
    assert by_code["touches-superior-edge"].structure == "left-lung"
    assert by_code["touches-right-edge"].severity == "fail"
    assert by_code["touches-right-edge"].structure == "right-lung"
    assert "Right lung" in by_code["touches-right-edge"].message
    assert by_code["touches-superior-edge"].planes == FlagPlanes(axis=0, first=19, last=19)
    assert by_code["touches-right-edge"].planes == FlagPlanes(axis=2, first=0, last=0)


def test_edges_are_named_by_patient_side_on_feet_first_series() -> None:
    volume = make_volume(direction=FFS)
    shape = volume.array.shape
    # FFS: columns run to the patient's right, so the low columns are the patient's left.
    left = box(shape, slice(0, 12), slice(5, 25), slice(6, 11))  # touches slice 0: the superior end
    right = box(shape, slice(3, 15), slice(5, 25), slice(18, 30))  # touches the last column: patient's right
    flags = qa_flags(volume, [lung("left-lung", left), lung("right-lung", right)])
    assert codes(flags) == {("touches-superior-edge", "left-lung"), ("touches-right-edge", "right-lung")}


def test_left_right_swapped_by_patient_coordinates() -> None:
    volume = make_volume()
    left, right = plausible_pair()
    flags = qa_flags(volume, [lung("left-lung", right), lung("right-lung", left)])
    assert codes(flags) == {("left-right-swapped", None)}
    assert flags[0].severity == "fail" and "swapped" in flags[0].message
    # The same masks are right on a feet-first series, whose columns run to the patient's right.
    assert qa_flags(make_volume(direction=FFS), [lung("left-lung", right), lung("right-lung", left)]) == []


def test_empty_mask_fails() -> None:
    volume = make_volume()
    left, _ = plausible_pair()
    flags = qa_flags(volume, [lung("left-lung", left), lung("right-lung", np.zeros_like(left))])
    assert codes(flags) == {("empty-mask", "right-lung")}
    assert flags[0].severity == "fail" and SERIES in flags[0].message


# --- assess: measurements and QA flags, once ------------------------------------------------


def test_assess_measures_every_structure_and_adds_each_flag_once(tmp_path: Path) -> None:
    volume = make_volume()
    left, right = plausible_pair()
    engine_flag = QAFlag(code="laterality-corrected", severity="warning", structure=None, message="engine's own")
    # Swapped sides and an empty right lung: one flag about the whole result, one about a structure.
    result = SegmentationResult(
        "lung-threshold", "1.0.0", [lung("left-lung", right), lung("right-lung", left)], flags=[engine_flag]
    )
    assessed = assess(volume, result)
    assert not result.assessed and result.flags == [engine_flag]  # the input is left as it was
    assert assessed.assessed
    assert [f.code for f in assessed.flags] == ["laterality-corrected", "left-right-swapped"]
    for item in assessed.structures:
        assert item.measurements == measure(volume, item.mask)
        assert item.flags == []
    assert assess(volume, assessed) is assessed
    assert [f.code for f in assessed.all_flags()] == ["laterality-corrected", "left-right-swapped"]
    # The store keeps the assessed state and the measurements.
    path = tmp_path / "segmentation.npz"
    loaded = load_result(path, save_result(assessed, path))
    assert loaded.assessed and loaded.flags == assessed.flags
    assert [s.measurements for s in loaded.structures] == [s.measurements for s in assessed.structures]
    assert assess(volume, loaded) is loaded


def test_structure_flags_go_to_their_structure() -> None:
    volume = make_volume()
    left, _ = plausible_pair()
    assessed = assess(volume, SegmentationResult("e", "1", [lung("left-lung", left), lung("right-lung", np.zeros_like(left))]))
    assert assessed.flags == []
    assert [f.code for f in assessed.structures[1].flags] == ["empty-mask"]
    assert assessed.structures[1].measurements is not None and assessed.structures[1].measurements.voxel_count == 0
    assert [f.code for f in assessed.all_flags()] == ["empty-mask"]


def test_the_package_uses_the_assessed_result_without_measuring_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.segmentation import qa

    volume = make_volume(hu=np.full((20, 30, 30), -850, dtype=np.int16))
    left, right = plausible_pair()
    assessed = assess(volume, SegmentationResult("e", "1", [lung("left-lung", left), lung("right-lung", right)]))

    def measured_again(*args: object) -> None:
        raise AssertionError("an assessed result was measured or flagged again")

    monkeypatch.setattr(qa, "measure", measured_again)
    monkeypatch.setattr(qa, "qa_flags", measured_again)
    package = build_package([], volume, assessed, tmp_path, formats=("json",))
    assert [s.measurements for s in package.structures] == [s.measurements for s in assessed.structures]
    assert package.flags == assessed.all_flags()


# --- lung QA on a diseased chest: dense regions, length, volume ratio, effusion ---------------

CHEST = (40, 60, 60)  # 3 mm voxels: the coarse grid of tools/segmentation/lung_qa.py is the grid itself
LUNG_ROWS, LUNG_SLICES = slice(10, 50), slice(5, 35)
# HFS: columns run to the patient's left.
LEFT_COLUMNS, RIGHT_COLUMNS = slice(35, 55), slice(5, 25)
# A juxtapleural mass against the left lung's lateral wall: slices 14-25 (z 42-75 mm), 23 mL,
# 21 mL once opened (the opening that drops vessels takes the block's edges).
MASS = (slice(14, 26), slice(26, 35), slice(47, 55))


def chest(direction: tuple[tuple[float, float, float], ...] = HFS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HU (soft tissue at 40 HU, aerated lung at -850) and two 2.2 L box lungs, clear of every edge."""
    left = box(CHEST, LUNG_SLICES, LUNG_ROWS, LEFT_COLUMNS)
    right = box(CHEST, LUNG_SLICES, LUNG_ROWS, RIGHT_COLUMNS)
    hu = np.full(CHEST, 40, dtype=np.int16)
    hu[left | right] = -850
    return hu, left, right


def chest_flags(hu: np.ndarray, left: np.ndarray, right: np.ndarray, direction=HFS) -> list[QAFlag]:
    volume = make_volume(CHEST, spacing=(3.0, 3.0, 3.0), direction=direction, hu=hu)
    return qa_flags(volume, [lung("left-lung", left), lung("right-lung", right)])


def test_aerated_lungs_in_soft_tissue_give_no_lung_flags() -> None:
    assert chest_flags(*chest()) == []


def test_dense_mass_left_out_of_the_lung_is_flagged_with_its_slices() -> None:
    hu, left, right = chest()
    hu[MASS] = 30
    left[MASS] = False
    flags = chest_flags(hu, left, right)
    assert codes(flags) == {("dense-excluded", "left-lung")}
    assert "21 mL" in flags[0].message and "z 42 to 75 mm (slices 15-26 of 40)" in flags[0].message
    assert flags[0].planes == FlagPlanes(axis=0, first=14, last=25)  # the same slices, for the viewer's "jump to"


def test_dense_mass_inside_the_lung_is_flagged() -> None:
    hu, left, right = chest()
    hu[MASS] = 30
    flags = chest_flags(hu, left, right)
    assert codes(flags) == {("dense-included", "left-lung")}
    assert "slices 15-26" in flags[0].message


def test_small_dense_spots_and_thin_vessels_are_not_flagged() -> None:
    hu, left, right = chest()
    hu[20, 20:40, 45] = 40  # a vessel one voxel thick, in the lung
    hu[10:13, 30:32, 40:42] = 40  # a 0.3 mL nodule
    assert chest_flags(hu, left, right) == []


def test_apex_missing_from_one_lung_is_flagged_where_to_look() -> None:
    hu, left, right = chest()
    left[25:35] = False  # the left apex (top 30 mm) missed
    flags = chest_flags(hu, left, right)
    assert codes(flags) == {("lung-length-mismatch", "left-lung")}
    assert "apex ends 30 mm below" in flags[0].message
    assert "slices 26-35 of 40" in flags[0].message


def test_apex_mismatch_on_a_feet_first_series_names_the_right_slices() -> None:
    """FFS: slice index grows towards the feet, so the apex is at the low slices."""
    hu, left, right = chest()
    left, right = right, left  # FFS columns run to the patient's right: swap the boxes' sides
    left[5:15] = False
    flags = chest_flags(hu, left, right, direction=FFS)
    assert codes(flags) == {("lung-length-mismatch", "left-lung")}
    assert "slices 6-15 of 40" in flags[0].message
    assert flags[0].planes == FlagPlanes(axis=0, first=5, last=14)


def test_bases_within_the_usual_difference_are_not_flagged() -> None:
    hu, left, right = chest()
    right[5:15] = False  # the right base 30 mm higher: a normal hemidiaphragm
    assert "lung-length-mismatch" not in {f.code for f in chest_flags(hu, left, right)}


def test_left_right_volume_ratio_outside_usual_range() -> None:
    hu, left, right = chest()
    left[:, :, 45:55] = False  # half the left lung
    flags = chest_flags(hu, left, right)
    assert codes(flags) == {("lung-volume-ratio", None)}
    assert "0.50" in flags[0].message


def test_fluid_layer_behind_a_lung_suggests_effusion() -> None:
    hu, left, right = chest()
    hu[5:25, 50:56, RIGHT_COLUMNS] = 10  # a dependent layer of fluid behind the right lung
    flags = chest_flags(hu, left, right)
    assert codes(flags) == {("pleural-effusion-suspected", "right-lung")}
    assert "slices 6-25 of 40" in flags[0].message


def test_ratio_and_length_are_not_judged_on_lungs_cut_by_the_scan() -> None:
    hu, left, right = chest()
    left[0:5, LUNG_ROWS, LEFT_COLUMNS] = True  # the left base reaches the first slice: coverage, not anatomy
    left[:, :, 45:55] = False
    right[5:25] = False  # the right base 60 mm higher
    flags = chest_flags(hu, left, right)
    assert not {"lung-volume-ratio", "lung-length-mismatch"} & {f.code for f in flags}


def test_a_lung_smaller_than_a_coarse_block_raises_no_error() -> None:
    volume = make_volume(CHEST, spacing=(1.0, 1.0, 1.0))  # 3 mm blocks of 27 voxels
    _, left, right = chest()
    speck = np.zeros(CHEST, dtype=bool)
    speck[20, 30, 40] = True
    flags = qa_flags(volume, [lung("left-lung", speck), lung("right-lung", right)])
    assert "volume-low" in {f.code for f in flags}
