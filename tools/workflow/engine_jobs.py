"""Segmentation on the `engines` queue: a study job hands its segment step to a worker with the engines
(a GPU machine) and waits for it without holding a worker (docs/architecture.md, "The engine queue").

Everything travels through the shared work store, in one folder per job and variant:

    request.json      what to segment: the stored volume (path + sha256), the engine chain, the
                      targets, the study's GTV to leave out (a file of its own), the job to resume
    exclusion.npz     that GTV, when the study has one (found by the study worker, which talks to the PACS)
    result.json       what the engine worker made of the request: the stored segmentation, or the
                      readable reason none came out, and which worker ran it
    answer-<random>/<variant>-segmentation-<engine>.npz   the masks (a folder per answer)

The queue's message carries the request's path only. The segment step asks (`segment_on_queue`):
a result for the current request is returned (or its failure raised as the study's); otherwise the
request is (re)submitted and `SegmentationQueued` raised, which the runtime takes as "this job waits
for its engine" (graphs/runtime.py). The engine worker (`run_engine_request`) writes the result and
queues the job's resume, which runs the segment step again from its checkpoint and finds it.
A request delivered again after it was answered is answered from the result already written; one
delivered again while it is still being segmented (a redelivery after the broker's visibility timeout)
is segmented twice, each answer in a folder of its own, and either answer is a whole one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from pydantic import BaseModel

from tools.imaging.npz_store import file_sha256, load_npz, save_npz
from tools.imaging.volume import Volume
from tools.imaging.volume_store import load_volume
from tools.segmentation.catalog import EngineCatalog
from tools.segmentation.exclusion import Exclusion
from tools.workflow.failure import StudyFailure
from tools.workflow.prepare import segment_stored
from tools.workflow.records import StoredFile, StoredSegmentation, Variant

log = logging.getLogger(__name__)

REQUEST = "request.json"
RESULT = "result.json"
EXCLUSION = "exclusion.npz"


class StoredExclusion(StoredFile):
    source: str
    """where the region comes from, for the reviewer (ROI and RTSTRUCT UIDs)"""


class EngineRequest(BaseModel):
    """What an engine worker segments for one study job."""

    thread_id: str
    variant: Variant
    volume: StoredFile
    chain: list[str]
    targets: list[str]
    exclusion: StoredExclusion | None = None

    def asks_for(self, other: EngineRequest) -> bool:
        """Whether both ask for the same segmentation (the exclusion is found once, when first asked)."""
        return self.model_dump(exclude={"exclusion"}) == other.model_dump(exclude={"exclusion"})


class EngineResult(BaseModel):
    """An engine worker's answer to one request (named by the request file's sha256)."""

    request_sha256: str
    segmentation: StoredSegmentation | None = None
    error: str | None = None
    worker: str
    """the Celery worker that ran it (NAME@HOST) and its pool process"""
    pid: int
    seconds: float


class SegmentationQueue(Protocol):
    """Where segment steps send their requests (agent/workers/queue.py, over Celery)."""

    def submit(self, thread_id: str, request_path: Path) -> None: ...


class SegmentationQueued(Exception):
    """The job's segmentation went to the engine workers: the job stops here without holding a worker,
    and the engine worker queues its resume once the result is in the work store."""

    def __init__(self, thread_id: str, request_path: Path) -> None:
        super().__init__(f"job {thread_id} waits for its segmentation ({request_path}) from an engine worker")
        self.thread_id = thread_id
        self.request_path = request_path


def request_folder(work_dir: Path, variant: Variant, thread_id: str) -> Path:
    """The job's engine folder inside the study's work folder (named by a digest: thread ids come from outside)."""
    return work_dir / f"{variant}-engine-{hashlib.sha256(thread_id.encode()).hexdigest()[:16]}"


def segment_on_queue(
    queue: SegmentationQueue,
    thread_id: str,
    volume_file: StoredFile,
    work_dir: Path,
    chain: Sequence[str],
    targets: Sequence[str],
    variant: Variant,
    exclusion_for: Callable[[Volume], Exclusion | None] | None = None,
) -> StoredSegmentation:
    """The engine worker's segmentation of `volume_file` for job `thread_id`, once it is there.

    Raises SegmentationQueued after (re)submitting the request when it is not; StudyFailure with the
    engine worker's reason when no engine produced a result."""
    folder = request_folder(work_dir, variant, thread_id)
    wanted = EngineRequest(
        thread_id=thread_id, variant=variant, volume=volume_file, chain=list(chain), targets=list(targets)
    )
    request = _read(folder / REQUEST, EngineRequest)
    if request is None or not request.asks_for(wanted):
        # First asked (or asked differently): the GTV is looked up in the PACS here, where the PACS is
        # reachable, and handed to the engine worker as a file.
        request = wanted.model_copy(update={"exclusion": _store_exclusion(folder, volume_file, exclusion_for)})
        _write_atomically(folder / REQUEST, request.model_dump_json(indent=2))
    request_sha256 = file_sha256(folder / REQUEST)
    result = _read(folder / RESULT, EngineResult)
    if result is not None and result.request_sha256 == request_sha256:
        if result.error is not None or result.segmentation is None:
            raise StudyFailure(result.error or f"engine worker {result.worker} returned no segmentation")
        log.info("job %s: segmentation by engine worker %s (pid %d) in %.1f s", thread_id, result.worker, result.pid,
                 result.seconds)
        return result.segmentation
    queue.submit(thread_id, folder / REQUEST)
    raise SegmentationQueued(thread_id, folder / REQUEST)


def run_engine_request(engines: EngineCatalog, request_path: Path, worker: str) -> EngineResult:
    """Answer a request on an engine worker: segment, store the masks and the result beside the request.

    A result already written for this very request is returned as it is (the message came twice).
    Whatever stops the engines becomes the result's error, so the study ends failed with that
    reason instead of waiting for a result that never comes."""
    folder = request_path.parent
    request_sha256 = file_sha256(request_path)
    done = _read(folder / RESULT, EngineResult)
    if done is not None and done.request_sha256 == request_sha256:
        return done
    request = EngineRequest.model_validate_json(request_path.read_text())
    started = time.perf_counter()
    segmentation, error = None, None
    try:
        exclusion = _load_exclusion(request.exclusion)
        # A folder per answer: a second answer to the same request (a redelivery while the first still ran)
        # never overwrites masks whose sha256 a study already holds.
        segmentation = segment_stored(
            engines, request.volume, folder / f"answer-{uuid.uuid4().hex[:12]}", request.chain, request.targets,
            request.variant, exclusion_for=lambda _volume: exclusion,
        )
    except StudyFailure as exc:
        error = str(exc)
    except Exception as exc:  # any engine fault ends the study with a reason; nothing may wait forever
        log.exception("job %s: engine worker %s could not segment %s", request.thread_id, worker, request_path)
        error = (
            f"the engine worker {worker} could not segment the volume {request.volume.path} ({type(exc).__name__}: "
            f"{exc}). Check that worker's log and that it mounts the work store at the same path, then run the study again."
        )
    result = EngineResult(
        request_sha256=request_sha256,
        segmentation=segmentation,
        error=error,
        worker=worker,
        pid=os.getpid(),
        seconds=round(time.perf_counter() - started, 3),
    )
    _write_atomically(folder / RESULT, result.model_dump_json(indent=2))
    return result


def _store_exclusion(
    folder: Path, volume_file: StoredFile, exclusion_for: Callable[[Volume], Exclusion | None] | None
) -> StoredExclusion | None:
    if exclusion_for is None:
        return None
    exclusion = exclusion_for(load_volume(volume_file.path, volume_file.sha256))
    if exclusion is None:
        return None
    path = folder / EXCLUSION
    sha256 = save_npz(path, {"shape": list(exclusion.mask.shape)}, compressed=True, bits=np.packbits(exclusion.mask))
    return StoredExclusion(path=path, sha256=sha256, source=exclusion.source)


def _load_exclusion(stored: StoredExclusion | None) -> Exclusion | None:
    if stored is None:
        return None
    meta, arrays = load_npz(stored.path, stored.sha256, what="region to leave out", remedy="run the study again.")
    shape = tuple(meta["shape"])
    mask = np.unpackbits(arrays["bits"], count=int(np.prod(shape))).reshape(shape).view(bool)
    return Exclusion(mask=mask, source=stored.source)


Model = TypeVar("Model", bound=BaseModel)


def _read(path: Path, model: type[Model]) -> Model | None:
    try:
        return model.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, text: str) -> None:
    """Readers on other machines see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    partial.write_text(text)
    partial.replace(path)


__all__ = [
    "EngineRequest",
    "EngineResult",
    "SegmentationQueue",
    "SegmentationQueued",
    "StoredExclusion",
    "request_folder",
    "run_engine_request",
    "segment_on_queue",
]
