"""The built-in lung engine against the synthetic phantom's exact masks.

Small phantoms (40 slices of 128x128 at 3.125 mm x 7.5 mm, an adult-size chest at low
resolution) keep the tests fast; one test runs the default 512x512 phantom for the Dice
goal. Orientation tests rebuild the same anatomy with other array layouts and geometries:
the engine must still put "left-lung" on the patient's left (+x in LPS).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tools.imaging.geometry import Geometry
from tools.imaging.volume import Volume
from tools.phantom import Phantom, PhantomSpec, Tissue, make_phantom, phantom_geometry
from tools.segmentation.base import EngineError, SegmentationResult, UnknownTargetError
from tools.segmentation.catalog import EngineCatalog
from tools.segmentation.exclusion import Exclusion, without
from tools.segmentation.lung_threshold import ENGINE_NAME, ENGINE_VERSION, LungThresholdEngine
from tools.segmentation.qa import assess

pytestmark = pytest.mark.unit

SMALL = {"slices": 40, "rows": 128, "columns": 128, "pixel_spacing_mm": 3.125, "slice_thickness_mm": 7.5}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.count_nonzero(a & b)) / float(np.count_nonzero(a) + np.count_nonzero(b))


def phantom_volume(phantom: Phantom, hu: np.ndarray | None = None) -> Volume:
    """The phantom as the volume assembler would build it from its DICOM files."""
    spec = phantom.spec
    planes = phantom_geometry(spec)
    iop = np.asarray(planes.image_orientation_patient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    geometry = Geometry(
        origin=planes.image_positions_patient[0],
        spacing=(spec.pixel_spacing_mm, spec.pixel_spacing_mm, spec.slice_thickness_mm),
        direction=(tuple(iop[:3]), tuple(iop[3:]), tuple(normal)),
        shape=phantom.hu.shape,
    )
    return Volume(
        array=phantom.hu if hu is None else hu,
        geometry=geometry,
        series_instance_uid=phantom.series_instance_uid,
        study_instance_uid=phantom.study_instance_uid,
        frame_of_reference_uid=phantom.frame_of_reference_uid,
        modality="CT",
        sop_instance_uids=phantom.sop_instance_uids,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    )


def reoriented(volume: Volume, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> tuple[Volume, object]:
    """The same voxels stored with axes permuted and flipped, and the geometry that keeps them in place.

    Returns the new volume and a function applying the same re-layout to any mask.
    """
    def relayout(array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, perm)
        return np.ascontiguousarray(out[tuple(slice(None, None, -1) if f else slice(None) for f in flips)])

    old = volume.geometry
    # Old array axis a runs along these patient directions with these spacings.
    old_dirs = [np.asarray(old.direction[2]), np.asarray(old.direction[1]), np.asarray(old.direction[0])]
    old_spacing = [old.spacing[2], old.spacing[1], old.spacing[0]]
    new_shape = tuple(volume.array.shape[p] for p in perm)
    dirs = [old_dirs[p] * (-1.0 if f else 1.0) for p, f in zip(perm, flips, strict=True)]
    spacing = [old_spacing[p] for p in perm]
    # Old index (slice, row, column) of the new array's first voxel.
    first = [0, 0, 0]
    for a, (p, f) in enumerate(zip(perm, flips, strict=True)):
        first[p] = new_shape[a] - 1 if f else 0
    origin = old.index_to_patient(np.array([first[2], first[1], first[0]], dtype=float))
    geometry = Geometry(
        origin=tuple(float(v) for v in origin),
        spacing=(spacing[2], spacing[1], spacing[0]),
        direction=(tuple(dirs[2]), tuple(dirs[1]), tuple(dirs[0])),
        shape=new_shape,
    )
    new = Volume(
        array=relayout(volume.array),
        geometry=geometry,
        series_instance_uid=volume.series_instance_uid + ".9",
        study_instance_uid=volume.study_instance_uid,
        frame_of_reference_uid=volume.frame_of_reference_uid,
        modality="CT",
        sop_instance_uids=[f"1.2.3.{k}" for k in range(new_shape[0])],
        sop_class_uid=volume.sop_class_uid,
    )
    return new, relayout


def masks(result: SegmentationResult) -> dict[str, np.ndarray]:
    return {s.structure.key: s.mask for s in result.structures}


def centroid_x(volume: Volume, mask: np.ndarray) -> float:
    k, r, c = np.argwhere(mask).mean(axis=0)
    return float(volume.geometry.index_to_patient(np.array([c, r, k]))[0])


@pytest.fixture(scope="module")
def engine() -> LungThresholdEngine:
    return LungThresholdEngine()


@pytest.fixture(scope="module")
def small_hfs() -> Phantom:
    return make_phantom(PhantomSpec(**SMALL))


@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_small_phantom_lungs_match_exact_masks_on_the_right_sides(engine: LungThresholdEngine, position: str) -> None:
    phantom = make_phantom(PhantomSpec(**SMALL, patient_position=position))
    volume = phantom_volume(phantom)
    result = assess(volume, engine.segment(volume, ["lungs"]))
    found = masks(result)
    assert result.engine == ENGINE_NAME and result.engine_version == ENGINE_VERSION
    assert [s.structure.key for s in result.structures] == ["left-lung", "right-lung"]
    assert dice(found["left-lung"], phantom.left_lung) >= 0.98
    assert dice(found["right-lung"], phantom.right_lung) >= 0.98
    assert centroid_x(volume, found["left-lung"]) > 0 > centroid_x(volume, found["right-lung"])
    assert not (found["left-lung"] & found["right-lung"]).any()
    for item in result.structures:
        assert item.mask.dtype == np.bool_ and item.mask.shape == volume.array.shape
        assert 0.9 <= item.confidence <= 1.0
        # A phantom that starts below the apices: only "cut by the scan" warnings are allowed.
        assert all(f.severity != "fail" for f in item.flags), item.flags
    assert result.flags == []
    # The settings the SR and SEG name (TID 4019): fixed ones, and thresholds measured between lung and tissue.
    parameters = result.parameters
    assert {k: parameters[k] for k in ("air_threshold_hu", "min_lung_ml", "closing_radius_mm")} == {
        "air_threshold_hu": "-400", "min_lung_ml": "15", "closing_radius_mm": "3",
    }
    assert -900 < float(parameters["lung_threshold_hu"]) < float(parameters["edge_threshold_hu"]) < 40
    assert len(parameters["working_spacing_mm"].split("x")) == 3


def test_non_square_pixels(engine: LungThresholdEngine) -> None:
    """Columns twice as wide as rows (3.125 x 6.25 mm): sizes in mm must still work."""
    phantom = make_phantom(PhantomSpec(**{**SMALL, "columns": 256}))
    base = phantom_volume(phantom)
    g = base.geometry
    geometry = Geometry(
        origin=g.origin, spacing=(2 * g.spacing[0], g.spacing[1], g.spacing[2]), direction=g.direction,
        shape=(g.shape[0], g.shape[1], g.shape[2] // 2),
    )
    volume = Volume(**{**base.__dict__, "array": np.ascontiguousarray(base.array[:, :, ::2]), "geometry": geometry})
    found = masks(engine.segment(volume, ["lungs"]))
    assert dice(found["left-lung"], phantom.left_lung[:, :, ::2]) >= 0.97
    assert dice(found["right-lung"], phantom.right_lung[:, :, ::2]) >= 0.97
    assert centroid_x(volume, found["left-lung"]) > centroid_x(volume, found["right-lung"])


@pytest.mark.parametrize(
    ("perm", "flips"),
    [
        ((2, 0, 1), (False, True, False)),  # sagittal-like stack, superior-inferior along rows
        ((0, 1, 2), (True, False, True)),  # slices and columns reversed (an FFS-like layout)
        ((1, 2, 0), (True, True, True)),
    ],
)
def test_permuted_and_flipped_orientation(
    engine: LungThresholdEngine, small_hfs: Phantom, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]
) -> None:
    base = phantom_volume(small_hfs)
    volume, relayout = reoriented(base, perm, flips)
    # The geometry keeps every voxel at its patient position.
    probe = np.array([[5.0, 7.0, 3.0]])
    old_index = probe[0][::-1].astype(int)
    new_index = np.argwhere(relayout(_marker(base.array.shape, tuple(old_index))))[0]
    np.testing.assert_allclose(
        volume.geometry.index_to_patient(new_index[::-1].astype(float)),
        base.geometry.index_to_patient(probe[0]),
        atol=1e-6,
    )
    found = masks(engine.segment(volume, ["lungs"]))
    assert dice(found["left-lung"], relayout(small_hfs.left_lung)) >= 0.98
    assert dice(found["right-lung"], relayout(small_hfs.right_lung)) >= 0.98
    assert centroid_x(volume, found["left-lung"]) > 0 > centroid_x(volume, found["right-lung"])


def _marker(shape: tuple[int, ...], index: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[index] = True
    return out


def test_default_phantom_dice_at_least_098(engine: LungThresholdEngine) -> None:
    phantom = make_phantom(PhantomSpec())
    found = masks(engine.segment(phantom_volume(phantom), ["lungs"]))
    left, right = dice(found["left-lung"], phantom.left_lung), dice(found["right-lung"], phantom.right_lung)
    assert left >= 0.98 and right >= 0.98, (left, right)
    # Airways (trachea, main bronchi) and bowel gas are never lung, even where HU says air.
    either = found["left-lung"] | found["right-lung"]
    trachea_level = phantom.labels == Tissue.AIRWAY
    assert np.count_nonzero(either & trachea_level) <= 0.05 * np.count_nonzero(trachea_level)
    assert not (either & (phantom.labels == Tissue.BOWEL_GAS)).any()
    assert not (either & (phantom.labels == Tissue.OUTSIDE_AIR)).any()


def test_trachea_and_bowel_gas_excluded_on_small_phantom(engine: LungThresholdEngine, small_hfs: Phantom) -> None:
    found = masks(engine.segment(phantom_volume(small_hfs), ["lungs"]))
    either = found["left-lung"] | found["right-lung"]
    # Above the lungs' apices the airway is the trachea alone: none of it may be lung.
    apex = min(np.flatnonzero((small_hfs.left_lung | small_hfs.right_lung).any(axis=(1, 2)))[-1] + 1, either.shape[0])
    airway = small_hfs.labels == Tissue.AIRWAY
    assert airway[apex - 3 :].any()
    assert not (either & airway)[apex - 3 :].any()
    assert not (either & (small_hfs.labels == Tissue.BOWEL_GAS)).any()


def test_touching_lungs_are_split_left_and_right(engine: LungThresholdEngine, small_hfs: Phantom) -> None:
    """Aerated tissue across the anterior mediastinum joins the lungs into one region."""
    hu = small_hfs.hu.copy()
    labels = small_hfs.labels
    lungs = small_hfs.left_lung | small_hfs.right_lung
    levels = np.flatnonzero(lungs.any(axis=(1, 2)))
    bridge = np.zeros_like(lungs)
    mid = hu.shape[2] // 2
    for k in levels[len(levels) // 3 : 2 * len(levels) // 3]:
        rows = np.flatnonzero(lungs[k].any(axis=1))
        front = rows[0] + 3
        bridge[k, front : front + 3, mid - 12 : mid + 12] = True
    bridge &= labels == Tissue.SOFT_TISSUE
    hu[bridge] = -850
    volume = phantom_volume(small_hfs, hu)
    result = engine.segment(volume, ["lungs"])
    found = masks(result)
    assert dice(found["left-lung"], small_hfs.left_lung) >= 0.95
    assert dice(found["right-lung"], small_hfs.right_lung) >= 0.95
    assert centroid_x(volume, found["left-lung"]) > 0 > centroid_x(volume, found["right-lung"])
    assert not (found["left-lung"] & found["right-lung"]).any()


def test_single_target_returns_only_that_structure(engine: LungThresholdEngine, small_hfs: Phantom) -> None:
    result = engine.segment(phantom_volume(small_hfs), ["right-lung"])
    assert [s.structure.key for s in result.structures] == ["right-lung"]
    assert dice(result.structures[0].mask, small_hfs.right_lung) >= 0.98


def test_unknown_target_is_refused(engine: LungThresholdEngine, small_hfs: Phantom) -> None:
    with pytest.raises(UnknownTargetError, match="spleen"):
        engine.segment(phantom_volume(small_hfs), ["spleen"])
    # A structure the system knows (MedImageParse's MR liver) but this engine does not draw:
    with pytest.raises(EngineError, match="lung-threshold segments left-lung, right-lung, body only, not liver"):
        engine.segment(phantom_volume(small_hfs), ["liver"])


def test_volume_without_lungs_is_refused_naming_the_series(engine: LungThresholdEngine, small_hfs: Phantom) -> None:
    hu = np.where(small_hfs.labels == Tissue.OUTSIDE_AIR, -1000, 40).astype(np.int16)
    volume = phantom_volume(small_hfs, hu)
    with pytest.raises(EngineError, match=small_hfs.series_instance_uid):
        engine.segment(volume, ["lungs"])


def test_registry_provides_the_engine_by_name() -> None:
    engine = EngineCatalog().get("lung-threshold")
    assert isinstance(engine, LungThresholdEngine)
    assert (engine.name, engine.version) == ("lung-threshold", "1.1.0")


def test_an_excluded_region_is_left_out_of_both_lungs(engine: LungThresholdEngine, small_hfs: Phantom) -> None:
    """A GTV to leave out is never lung, nothing else changes, and the result says how much went."""
    volume = phantom_volume(small_hfs)
    result = engine.segment(volume, ["lungs"])
    plain = masks(result)
    gtv = np.zeros(volume.array.shape, dtype=bool)
    k, r, c = (int(round(float(v))) for v in np.argwhere(plain["left-lung"]).mean(axis=0))
    gtv[k - 2 : k + 3, r - 3 : r + 4, c - 3 : c + 4] = True
    left_out = without(result, Exclusion(mask=gtv, source="ROI 'GTV' of RTSTRUCT 1.2.3"), volume)
    excluded = masks(left_out)
    for key in ("left-lung", "right-lung"):
        assert not (excluded[key] & gtv).any()
        assert np.array_equal(excluded[key], plain[key] & ~gtv)
    assert (plain["left-lung"] & gtv).any()  # the GTV did lie in the lung
    [flag] = [f for f in left_out.flags if f.code == "region-excluded"]
    assert "ROI 'GTV' of RTSTRUCT 1.2.3" in flag.message and "left-lung" in flag.message
    assert left_out.parameters == {**result.parameters, "excluded_region": "ROI 'GTV' of RTSTRUCT 1.2.3"}
    with pytest.raises(EngineError, match="series' own grid"):
        without(result, Exclusion(mask=np.zeros((2, 2, 2), dtype=bool), source="a GTV"), volume)


def test_apex_cut_off_by_a_dense_band_stays_part_of_its_lung(engine: LungThresholdEngine) -> None:
    """Scarring across the left upper lobe cuts its apex off as a separate air region: it is still left lung."""
    phantom = make_phantom(PhantomSpec(**{**SMALL, "slices": 80, "slice_thickness_mm": 3.0}))
    levels = np.flatnonzero(phantom.left_lung.any(axis=(1, 2)))
    band = levels[-1] - 6  # HFS: the last slices are the most superior
    hu = phantom.hu.copy()
    hu[band][phantom.left_lung[band]] = 40  # one 3 mm slice of dense tissue right across the lung
    apex = phantom.left_lung.copy()
    apex[: band + 1] = False
    found = masks(engine.segment(phantom_volume(phantom, hu), ["lungs"]))
    assert np.count_nonzero(found["left-lung"] & apex) >= 0.95 * np.count_nonzero(apex)
    assert not (found["right-lung"] & apex).any()


def test_the_body_outline_is_the_patient_without_the_table(engine: LungThresholdEngine) -> None:
    """`body` (TG-263 External): every voxel of the patient, air inside included, never the CT table.

    The phantom's table touches the skin; on a real scanner a mattress (foam, about -900 HU) lies
    between them, as here: the table's top 4 mm become that foam."""
    phantom = make_phantom(PhantomSpec(**{**SMALL, "rows": 256, "columns": 256, "pixel_spacing_mm": 1.5}))
    table = np.isin(phantom.labels, [Tissue.TABLE_SHELL, Tissue.TABLE_CORE])
    patient = ~table & (phantom.labels != Tissue.OUTSIDE_AIR)
    mattress = table & (ndimage.distance_transform_edt(~patient, sampling=(1e6, 1.5, 1.5)) <= 4.0)
    hu = phantom.hu.copy()
    hu[mattress] = -900
    volume = phantom_volume(phantom, hu)
    result = engine.segment(volume, ["lungs", "body"])
    body = masks(result)["body"]
    assert not (patient & ~body).any(), "no voxel of the patient is missed"
    assert not (body & table).any(), "nothing of the table or the mattress"
    assert dice(body, patient) >= 0.995
    [spec] = [s.structure for s in result.structures if s.structure.key == "body"]
    assert (spec.roi_name, spec.rt_roi_type) == ("External", "EXTERNAL")
