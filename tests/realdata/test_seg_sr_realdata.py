"""SEG, SR and previews on a real chest CT: LIDC-IDRI-0001 (feet first, 133 slices).

The lung masks come from a plain threshold built here (air below -400 HU not connected to
the in-plane border, the largest component split at the patient midline x = 0 when the
lungs touch), so these tests check the writers on real geometry and real mask shapes
independently of the segmentation engines.

Data: LIDC-IDRI (CC BY 3.0; Armato SG III et al., Med Phys 38(2):915-931, 2011; TCIA).
"""

from __future__ import annotations

from datetime import datetime
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from PIL import Image
from pydicom import Dataset
from scipy import ndimage

from tests.dicom_checks import dataset_errors
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.results.common import dataset_bytes
from tools.results.previews import render_previews
from tools.results.seg import build_seg
from tools.results.sr import build_sr
from tools.review.slice_view import LEGEND_HEIGHT_PX
from tools.segmentation.base import STRUCTURES, SegmentationResult, StructureMask

pytestmark = pytest.mark.realdata

CREATED = datetime(2024, 5, 1, 12, 30, 15)


def threshold_lungs(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) lung masks by threshold; left/right by patient x from the geometry."""
    labels, count = ndimage.label(volume.array < -400)
    edges = np.concatenate(
        [labels[:, 0, :].ravel(), labels[:, -1, :].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]
    )
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    sizes[np.unique(edges)] = 0
    first, second = np.argsort(sizes)[::-1][:2]
    k, j, i = np.indices(volume.array.shape, sparse=True)
    affine = volume.geometry.affine()
    x = affine[0, 3] + affine[0, 0] * i + affine[0, 1] * j + affine[0, 2] * k  # patient x (LPS) per voxel
    if sizes[second] > 0.2 * sizes[first]:
        a, b = labels == first, labels == second
        left, right = (a, b) if x[a].mean() > x[b].mean() else (b, a)
    else:
        lungs = labels == first
        left, right = lungs & (x > 0), lungs & (x <= 0)
    return left, right


@pytest.fixture(scope="module")
def lidc(shared_data: Path) -> tuple[list[Dataset], Volume, SegmentationResult, dict[str, float]]:
    datasets = read_series_dir(shared_data / "lidc-idri-0001" / "dicom")
    volume = assemble_volume(datasets)
    left, right = threshold_lungs(volume)
    result = SegmentationResult(
        "lung-threshold", "test-threshold",
        [StructureMask(STRUCTURES["left-lung"], left, 0.9), StructureMask(STRUCTURES["right-lung"], right, 0.9)],
    )
    voxel_ml = float(np.prod(volume.geometry.spacing)) / 1000.0
    volumes_ml = {item.structure.key: float(item.mask.sum()) * voxel_ml for item in result.structures}
    return datasets, volume, result, volumes_ml


@pytest.fixture(scope="module")
def seg(lidc: tuple) -> Dataset:
    datasets, volume, result, _ = lidc
    return build_seg(datasets, volume, result, created=CREATED)[0]


@pytest.fixture(scope="module")
def sr(lidc: tuple, seg: Dataset) -> Dataset:
    datasets, volume, result, volumes_ml = lidc
    return build_sr(datasets, volume, result, seg, volumes_ml, created=CREATED)[0]


def test_threshold_lungs_are_plausible(lidc: tuple) -> None:
    _, _, _, volumes_ml = lidc
    assert 1000 < volumes_ml["left-lung"] < 4000 and 1000 < volumes_ml["right-lung"] < 4000


def test_seg_passes_dciodvfy(seg: Dataset, tmp_path: Path) -> None:
    assert dataset_errors(seg, tmp_path, "seg.dcm") == []


def test_sr_passes_dciodvfy(sr: Dataset, tmp_path: Path) -> None:
    assert dataset_errors(sr, tmp_path, "sr.dcm") == []


def test_seg_reads_back_to_the_same_masks(lidc: tuple, seg: Dataset) -> None:
    _, volume, result, _ = lidc
    pixels = hd.seg.segread(BytesIO(dataset_bytes(seg))).get_pixels_by_source_instance(
        volume.sop_instance_uids, segment_numbers=[1, 2], assert_missing_frames_are_empty=True
    )
    for n, item in enumerate(result.structures):
        assert np.array_equal(pixels[..., n].astype(bool), item.mask), item.structure.key


def test_sr_reads_back_with_volumes(lidc: tuple, seg: Dataset, sr: Dataset) -> None:
    _, _, _, volumes_ml = lidc
    groups = hd.sr.srread(BytesIO(dataset_bytes(sr))).content.get_volumetric_roi_measurement_groups()
    found = {}
    for group in groups:
        assert group.referenced_segment[0].referenced_sop_instance_uid == seg.SOPInstanceUID
        found[group.finding_sites[0].value.value] = float(group.get_measurements()[0].value)
    assert found == pytest.approx(
        {"44029006": volumes_ml["left-lung"], "3341006": volumes_ml["right-lung"]}, abs=1e-3
    )


def test_bytes_are_reproducible(lidc: tuple, seg: Dataset, sr: Dataset) -> None:
    datasets, volume, result, volumes_ml = lidc
    again_seg, _ = build_seg(datasets, volume, result, created=CREATED)
    assert dataset_bytes(again_seg) == dataset_bytes(seg)
    again_sr, _ = build_sr(datasets, volume, result, again_seg, volumes_ml, created=CREATED)
    assert dataset_bytes(again_sr) == dataset_bytes(sr)


def test_previews_put_the_right_lung_on_the_image_left(lidc: tuple, tmp_path: Path) -> None:
    _, volume, result, _ = lidc
    paths = render_previews(volume, result, tmp_path)
    assert [p.name for p in paths] == ["axial_1.png", "axial_2.png", "axial_3.png", "coronal.png"]
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))[:-LEGEND_HEIGHT_PX]
        width = image.shape[1]
        assert 400 <= width <= 1024 and path.stat().st_size > 10_000
        columns = {
            key: np.argwhere(np.all(image == np.asarray(STRUCTURES[key].color_rgb, dtype=np.uint8), axis=-1))[:, 1]
            for key in ("left-lung", "right-lung")
        }
        assert columns["right-lung"].size > 100 and columns["left-lung"].size > 100, path.name
        assert columns["right-lung"].mean() < width / 2 < columns["left-lung"].mean(), path.name
