"""A job's segmentation on the engine queue (tools/workflow/engine_jobs.py): the study worker's request,
the engine worker's answer, both through the work store; the queue records what would go to the broker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_qa import box, lung, make_volume, plausible_pair
from tools.imaging.volume import Volume
from tools.imaging.volume_store import save_volume
from tools.segmentation.base import EngineError, SegmentationResult
from tools.segmentation.exclusion import Exclusion
from tools.segmentation.result_store import load_result
from tools.workflow.engine_jobs import SegmentationQueued, run_engine_request, segment_on_queue
from tools.workflow.failure import StudyFailure
from tools.workflow.records import StoredFile

pytestmark = pytest.mark.unit

JOB = "study-20260101-000000-abcdef"


class Boxes:
    """An engine that finds two plausible lungs, or fails when told; counts its runs."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.runs = 0

    def segment(self, volume: Volume, targets: list[str]) -> SegmentationResult:
        self.runs += 1
        if self.fail:
            raise EngineError(f"no lungs found in series {volume.series_instance_uid}")
        left, right = plausible_pair(volume.array.shape)
        return SegmentationResult(engine="boxes", engine_version="1", structures=[lung("left-lung", left), lung("right-lung", right)])


class Catalog:
    def __init__(self, engine: Boxes) -> None:
        self.engine = engine

    def get(self, name: str) -> Boxes:
        return self.engine


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Path]] = []

    def submit(self, thread_id: str, request_path: Path) -> None:
        self.sent.append((thread_id, request_path))


def _stored_volume(tmp_path: Path) -> StoredFile:
    hu = np.full((20, 30, 30), -800, dtype=np.int16)
    path = tmp_path / "work" / "volume.npz"
    return StoredFile(path=path, sha256=save_volume(make_volume(hu=hu), path))


def _ask(queue: RecordingQueue, volume: StoredFile, exclusion: Exclusion | None = None) -> object:
    return segment_on_queue(
        queue, JOB, volume, volume.path.parent, ["boxes"], ["lungs"], "approval", exclusion_for=lambda _v: exclusion
    )


def test_the_request_goes_to_the_engine_worker_and_its_result_comes_back_through_the_work_store(tmp_path: Path) -> None:
    volume = _stored_volume(tmp_path)
    queue, engine = RecordingQueue(), Boxes(fail=False)
    gtv = Exclusion(mask=box((20, 30, 30), slice(5, 8), slice(10, 14), slice(18, 21)), source="ROI 'GTV' of RTSTRUCT 1.2.9")

    with pytest.raises(SegmentationQueued):
        _ask(queue, volume, gtv)
    [(thread_id, request)] = queue.sent
    assert thread_id == JOB and request.parent.parent == volume.path.parent
    with pytest.raises(SegmentationQueued):  # asked again before the answer (a resume): sent again, same request
        _ask(queue, volume, gtv)
    assert queue.sent == [(JOB, request)] * 2

    answered = run_engine_request(Catalog(engine), request, "e1@gpu-host")  # type: ignore[arg-type]
    assert run_engine_request(Catalog(engine), request, "e2@gpu-host") == answered  # a copy changes nothing
    assert engine.runs == 1 and answered.worker == "e1@gpu-host" and answered.error is None

    stored = _ask(queue, volume, gtv)
    assert stored == answered.segmentation and len(queue.sent) == 2
    result = load_result(stored.path, stored.sha256)  # type: ignore[attr-defined]
    # The GTV the study worker found went with the request and is out of every structure.
    assert not any((s.mask & gtv.mask).any() for s in result.structures)
    assert any(f.code == "region-excluded" and "GTV" in f.message for f in result.flags)


def test_an_engine_that_fails_ends_the_study_with_its_reason(tmp_path: Path) -> None:
    volume = _stored_volume(tmp_path)
    queue = RecordingQueue()
    with pytest.raises(SegmentationQueued):
        _ask(queue, volume)
    answered = run_engine_request(Catalog(Boxes(fail=True)), queue.sent[0][1], "e1@gpu-host")  # type: ignore[arg-type]
    assert answered.segmentation is None and answered.error
    with pytest.raises(StudyFailure, match="no lungs found in series"):
        _ask(queue, volume)
