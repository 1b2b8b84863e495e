"""The MedImageParse adapter on a real chest CT (LIDC-IDRI-0001, 133 slices of 512x512), against
the fake scoring endpoint of tests/fake_medimageparse.py.

The fake answers with masks computed from the pixels it receives, so this checks that real
slices reach it in the radiological view and come back onto the right voxels; and it measures
what a study costs on the wire: requests and request bytes at the default batch size of 8.
Measured when written (adapter 1.0.0, PNG compress level 6): 2D, 17 requests, 68.7 MB in all,
about 516 kB per slice (base64 PNG), 4.4 MB the largest request; 3D, 2 requests (one per
lung) of 46.0 MB each (the whole volume as gzipped NIfTI, base64).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fake_medimageparse import FakeMedImageParse
from tools.http import RetryPolicy
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.segmentation.lung_threshold import LungThresholdEngine
from tools.segmentation.medimageparse.engine import MedImageParseEngine

pytestmark = pytest.mark.realdata

BATCH_SIZE = 8
# The fake's "lung" is every air-dark pixel inside the body, trachea and main bronchi included,
# which the lung-threshold engine leaves out; the sides must still agree closely.
DICE_FLOOR = 0.9


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.count_nonzero(a & b)) / float(np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def lidc(shared_data: Path) -> tuple[Volume, set[str]]:
    datasets = read_series_dir(shared_data / "lidc-idri-0001" / "dicom")
    first = datasets[0]
    identifiers = {str(first.PatientID), str(first.StudyInstanceUID), str(first.SeriesInstanceUID)}
    identifiers |= {str(ds.SOPInstanceUID) for ds in datasets}
    if str(first.get("PatientName", "")):
        identifiers.add(str(first.PatientName))
    return assemble_volume(datasets), identifiers


@pytest.fixture(scope="module")
def reference(lidc: tuple[Volume, set[str]]) -> dict[str, np.ndarray]:
    volume, _ = lidc
    result = LungThresholdEngine().segment(volume, ["lungs"])
    return {s.structure.key: s.mask for s in result.structures}


def test_lidc_in_2d_batches_with_request_counts_and_sizes(lidc, reference, record_property) -> None:
    volume, identifiers = lidc
    n_slices = volume.array.shape[0]
    with FakeMedImageParse() as server:
        engine = MedImageParseEngine(server.url, None, batch_size=BATCH_SIZE, timeout_s=120.0, retry=RetryPolicy())
        started = time.perf_counter()
        result = engine.segment(volume, ["lungs"])
        seconds = time.perf_counter() - started
    assert server.problems == []
    assert len(server.requests) == engine.requests_sent == math.ceil(n_slices / BATCH_SIZE) == 17
    rows = [len(json.loads(r.body)["input_data"]["data"]) for r in server.requests]
    assert sum(rows) == n_slices and max(rows) == BATCH_SIZE
    total = sum(len(r.body) for r in server.requests)
    assert total == engine.bytes_sent
    for request in server.requests:
        for identifier in identifiers:
            assert identifier.encode() not in request.body
    masks = {s.structure.key: s.mask for s in result.structures}
    for key in ("left-lung", "right-lung"):
        assert dice(masks[key], reference[key]) > DICE_FLOOR, key
    assert all(f.code != "laterality-corrected" for f in result.flags)
    numbers = {
        "slices": n_slices,
        "batch_size": BATCH_SIZE,
        "requests": len(server.requests),
        "request_bytes_total": total,
        "request_bytes_per_slice": round(total / n_slices),
        "largest_request_bytes": max(len(r.body) for r in server.requests),
        "seconds_with_fake_endpoint": round(seconds, 1),
        "dice_vs_lung_threshold": {k: round(dice(masks[k], reference[k]), 3) for k in masks},
    }
    for name, value in numbers.items():
        record_property(name, value)
    print(f"\nMedImageParse 2D on LIDC-IDRI-0001: {json.dumps(numbers)}")


def test_lidc_in_3d_sends_one_volume_per_target(lidc, reference, record_property) -> None:
    volume, identifiers = lidc
    with FakeMedImageParse() as server:
        engine = MedImageParseEngine(server.url, None, timeout_s=300.0, retry=RetryPolicy(), mode="3d")
        result = engine.segment(volume, ["lungs"])
    assert server.problems == []
    assert len(server.requests) == 2
    for request in server.requests:
        for identifier in identifiers:
            assert identifier.encode() not in request.body
    masks = {s.structure.key: s.mask for s in result.structures}
    for key in ("left-lung", "right-lung"):
        assert dice(masks[key], reference[key]) > DICE_FLOOR, key
    sizes = [len(r.body) for r in server.requests]
    record_property("request_bytes_3d", sizes)
    print(f"\nMedImageParse 3D on LIDC-IDRI-0001: {len(sizes)} requests, bytes {sizes}")
