"""A MONAI bundle is code: its configs build objects by name (`_target_`, `$import ...`) and a
TorchScript model runs whatever it holds. The `monai-bundle` engine loads one only when the
operator vouched for it: its sha256 matches the configured one, or it lies under a trusted
directory (bundles trained here or vetted by hand).

The bundle's sha256 covers every file that decides what runs: everything under `configs/` and
`scripts/`, and `models/model.pt` and `models/model.ts`. It is the sha256 of the lines
``<sha256 of the file>  <path relative to the bundle>``, sorted by path (bytewise), each ending
in a newline; the same as, in the bundle directory:

    find configs scripts models/model.pt models/model.ts -type f 2>/dev/null | LC_ALL=C sort \\
        | xargs sha256sum | sha256sum
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tools.segmentation.base import EngineError

_CODE_DIRS = ("configs", "scripts")
_WEIGHTS = ("models/model.pt", "models/model.ts")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_files(root: Path) -> list[str]:
    """The bundle's files that the hash covers, as sorted POSIX paths relative to `root`."""
    found = {p.relative_to(root).as_posix() for d in _CODE_DIRS for p in (root / d).rglob("*") if p.is_file()}
    found.update(w for w in _WEIGHTS if (root / w).is_file())
    return sorted(found, key=lambda name: name.encode())


def bundle_sha256(root: Path) -> str:
    """The bundle's sha256 as defined in this module's docstring."""
    listing = "".join(f"{_file_sha256(root / name)}  {name}\n" for name in bundle_files(root))
    return hashlib.sha256(listing.encode()).hexdigest()


def check_bundle_trusted(root: Path, expected_sha256: str | None, trusted_dir: Path | None) -> str:
    """Return the bundle's sha256 if it may be loaded; otherwise refuse, saying what to set.

    Raises:
        EngineError: the bundle is neither under `trusted_dir` nor matches `expected_sha256`.
    """
    actual = bundle_sha256(root)
    if trusted_dir is not None and root.resolve().is_relative_to(trusted_dir.resolve()):
        return actual
    if expected_sha256 is not None and expected_sha256.strip().lower() == actual:
        return actual
    if expected_sha256 is not None:
        why = f"its sha256 is {actual}, not the configured {expected_sha256.strip()}: it changed since it was vetted"
    else:
        why = f"no sha256 is configured for it (its sha256 is {actual})"
    trusted = f" and it is not under the trusted directory {trusted_dir}" if trusted_dir else ""
    raise EngineError(
        f"refusing to load the MONAI bundle at {root}: a bundle is code, and {why}{trusted}. If you trust "
        f"this bundle, set IMAGING_AGENT_MONAI_BUNDLE_SHA256={actual}, or put it under "
        "IMAGING_AGENT_TRUSTED_BUNDLE_DIR (see README, MONAI bundles)."
    )
