"""Arrays on disk as .npz with a JSON description, checked by content hash on the way back.

The one store helper behind the cached volume and the cached segmentation: big arrays stay
out of graph state, which holds only the path and the sha256 (docs/architecture.md,
durability). A resumed run loads the file back and checks the hash, so a replaced or damaged
file is noticed, not used.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

_META = "meta"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_npz(path: Path, meta: dict[str, Any], *, compressed: bool, **arrays: np.ndarray) -> str:
    """Write ``arrays`` and ``meta`` (JSON) atomically: a reader never sees half a file. Returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per writer: two workers answering one request write the same file (engine_jobs.py).
    partial = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.partial.npz")
    (np.savez_compressed if compressed else np.savez)(partial, **{_META: np.array(json.dumps(meta))}, **arrays)
    partial.replace(path)
    return file_sha256(path)


def load_npz_meta(path: Path) -> dict[str, Any]:
    """The description alone, without reading the arrays (an .npz member is read on access)."""
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data[_META]))


def load_npz(
    path: Path, expected_sha256: str | None, *, what: str, remedy: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The description and the arrays of a file written by `save_npz`.

    Raises:
        ValueError: the file's hash is not ``expected_sha256``; the message names ``what`` the
            file holds, its path and the ``remedy``.
    """
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise ValueError(f"the cached {what} {path} changed since it was written (hash mismatch); {remedy}")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data[_META]))
        arrays = {name: data[name] for name in data.files if name != _META}
    return meta, arrays
