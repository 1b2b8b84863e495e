"""Volumes on disk, keyed by content: big arrays stay out of graph state (DESIGN.md, durable).

The graph state holds only the path and the sha256 of the file; a resumed run loads the
array back and checks the hash, so a replaced or damaged file is noticed, not used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tools.imaging.geometry import Geometry
from tools.imaging.volume import Volume


def content_key(series_instance_uid: str, sop_instance_uids: Iterable[str]) -> str:
    """A short key for a series' exact content: the same instances give the same work folder."""
    digest = hashlib.sha256(series_instance_uid.encode())
    for uid in sorted(sop_instance_uids):
        digest.update(b"|" + uid.encode())
    return digest.hexdigest()[:24]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_npz(path: Path, *, compressed: bool, **arrays: np.ndarray) -> str:
    """Write arrays as .npz atomically (a reader never sees half a file); returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    (np.savez_compressed if compressed else np.savez)(partial, **arrays)
    partial.replace(path)
    return file_sha256(path)


def save_volume(volume: Volume, path: Path) -> str:
    """Write the volume as .npz (array + geometry + identifiers); returns the file's sha256."""
    meta = {
        "geometry": volume.geometry.model_dump(mode="json"),
        "series_instance_uid": volume.series_instance_uid,
        "study_instance_uid": volume.study_instance_uid,
        "frame_of_reference_uid": volume.frame_of_reference_uid,
        "modality": volume.modality,
        "sop_instance_uids": volume.sop_instance_uids,
        "sop_class_uid": volume.sop_class_uid,
    }
    return save_npz(path, compressed=False, array=volume.array, meta=np.array(json.dumps(meta)))


def load_volume(path: Path, expected_sha256: str | None = None) -> Volume:
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise ValueError(
            f"the cached volume {path} changed since it was written (hash mismatch); delete it and "
            "run the study again so the volume is rebuilt from the PACS."
        )
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        array = data["array"]
    return Volume(
        array=array,
        geometry=Geometry.model_validate(meta["geometry"]),
        series_instance_uid=meta["series_instance_uid"],
        study_instance_uid=meta["study_instance_uid"],
        frame_of_reference_uid=meta["frame_of_reference_uid"],
        modality=meta["modality"],
        sop_instance_uids=list(meta["sop_instance_uids"]),
        sop_class_uid=meta["sop_class_uid"],
    )
