"""Volumes on disk, keyed by content: big arrays stay out of graph state (docs/architecture.md, durability).

The graph state holds only the path and the sha256 of the file; a resumed run loads the
array back and checks the hash (tools/imaging/npz_store.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tools.imaging.geometry import Geometry
from tools.imaging.npz_store import load_npz, load_npz_meta, save_npz
from tools.imaging.volume import Volume


def content_key(series_instance_uid: str, sop_instance_uids: Iterable[str]) -> str:
    """A short key for a series' exact content: the same instances give the same work folder."""
    digest = hashlib.sha256(series_instance_uid.encode())
    for uid in sorted(sop_instance_uids):
        digest.update(b"|" + uid.encode())
    return digest.hexdigest()[:24]


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
    return save_npz(path, meta, compressed=False, array=volume.array)


def load_volume_geometry(path: Path) -> Geometry:
    """The geometry of a stored volume, read without its voxels (an .npz member is read on access)."""
    return Geometry.model_validate(load_npz_meta(path)["geometry"])


def load_volume(path: Path, expected_sha256: str | None = None) -> Volume:
    meta, arrays = load_npz(
        path, expected_sha256, what="volume",
        remedy="delete it and run the study again so the volume is rebuilt from the PACS.",
    )
    return Volume(
        array=arrays["array"],
        geometry=Geometry.model_validate(meta["geometry"]),
        series_instance_uid=meta["series_instance_uid"],
        study_instance_uid=meta["study_instance_uid"],
        frame_of_reference_uid=meta["frame_of_reference_uid"],
        modality=meta["modality"],
        sop_instance_uids=list(meta["sop_instance_uids"]),
        sop_class_uid=meta["sop_class_uid"],
    )
