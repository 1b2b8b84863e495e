"""RT Structure Set on a real chest CT (LIDC-IDRI-0001, feet first, 133 slices of 512x512).

The lung masks are a plain threshold (air below -400 HU not connected to the air outside
the body), split at the middle of the lungs' column range. They are deliberately rough:
vessels and airways leave hundreds of holes and islands per lung, which is what the writer
and the round trip have to survive. The segmentation engine is tested elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from scipy import ndimage

from tests.dicom_checks import dciodvfy_errors
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.results.common import dataset_bytes
from tools.results.rtstruct import build_rtstruct, rtstruct_masks
from tools.segmentation.base import STRUCTURES, SegmentationResult, StructureMask

pytestmark = pytest.mark.realdata

@dataclass
class Built:
    sources: list[Dataset]
    volume: Volume
    right: np.ndarray
    left: np.ndarray
    data: bytes


def threshold_lungs(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """(patient right, patient left) masks. Axial identity orientation: columns run towards
    the patient's left, so the right lung is at the lower column indices."""
    air = volume.array < -400
    labels, _ = ndimage.label(air)
    outside = np.unique(np.concatenate([labels[:, [0, -1], :].ravel(), labels[:, :, [0, -1]].ravel()]))
    sizes = np.bincount(labels.ravel())
    sizes[outside] = 0
    lungs = labels == int(np.argmax(sizes))
    columns = np.flatnonzero(lungs.any(axis=(0, 1)))
    middle = (columns[0] + columns[-1]) // 2
    right = lungs.copy()
    right[:, :, middle:] = False
    return right, lungs & ~right


@pytest.fixture(scope="module")
def built(shared_data: Path) -> Built:
    sources = read_series_dir(shared_data / "lidc-idri-0001" / "dicom")
    volume = assemble_volume(sources)
    assert np.allclose([float(v) for v in sources[0].ImageOrientationPatient], [1, 0, 0, 0, 1, 0])
    right, left = threshold_lungs(volume)
    result = SegmentationResult(
        "lung-threshold", "test", [StructureMask(STRUCTURES["left-lung"], left, 1.0), StructureMask(STRUCTURES["right-lung"], right, 1.0)]
    )
    ds, described = build_rtstruct(sources, volume, result, created=datetime(2024, 1, 1, 12, 0, 0))
    data = dataset_bytes(ds)
    assert described.sha256 and described.size_bytes == len(data)
    return Built(sources, volume, right, left, data)


def test_lidc_rtstruct_passes_dciodvfy(built: Built, tmp_path: Path) -> None:
    path = tmp_path / "lidc-rtstruct.dcm"
    path.write_bytes(built.data)
    assert dciodvfy_errors(path) == []


def test_lidc_round_trip_dice(built: Built) -> None:
    masks = rtstruct_masks(pydicom.dcmread(BytesIO(built.data)), built.volume)
    for name, truth in (("Lung_L", built.left), ("Lung_R", built.right)):
        overlap = int((masks[name] & truth).sum())
        assert 2 * overlap / (int(masks[name].sum()) + int(truth.sum())) >= 0.99, name
        assert np.array_equal(masks[name], truth), name


def test_lidc_contours_lie_on_their_referenced_images(built: Built) -> None:
    ds = pydicom.dcmread(BytesIO(built.data))
    planes = {
        str(s.SOPInstanceUID): (
            np.asarray(s.ImagePositionPatient, dtype=float),
            np.cross(np.asarray(s.ImageOrientationPatient[:3], float), np.asarray(s.ImageOrientationPatient[3:], float)),
        )
        for s in built.sources
    }
    mean_x = {}
    for roi in ds.ROIContourSequence:
        xs = []
        for item in roi.ContourSequence:
            position, normal = planes[item.ContourImageSequence[0].ReferencedSOPInstanceUID]
            points = np.asarray(item.ContourData, dtype=float).reshape(-1, 3)
            assert len(points) == item.NumberOfContourPoints
            assert np.abs((points - position) @ normal).max() <= 0.01
            xs.append(points[:, 0])
        mean_x[int(roi.ReferencedROINumber)] = float(np.concatenate(xs).mean())
    # Feet first with axial identity orientation: the patient's right is still negative x.
    assert mean_x[2] < 0 < mean_x[1]  # 2 = Lung_R, 1 = Lung_L
