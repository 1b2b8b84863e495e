"""Retention of work files: a study's work folder (DICOM copies, volumes, masks, results,
previews) is PHI at rest, needed only until its job finishes. `purge_work` deletes the folders
older than a cutoff that no unfinished job still uses; the caller says which are in use.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Collection
from pathlib import Path

from pydantic import BaseModel

SECONDS_PER_DAY = 86400.0


class PurgeReport(BaseModel):
    """What a purge deleted (or, on a dry run, would delete) and what it kept and why."""

    dry_run: bool
    deleted: list[Path] = []
    kept_in_use: list[Path] = []
    kept_recent: list[Path] = []
    bytes_freed: int = 0


def _newest_mtime(folder: Path) -> float:
    return max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.rglob("*"))])


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def purge_work(
    work_root: Path, older_than_days: float, in_use: Collection[str], *, dry_run: bool = False, now: float | None = None
) -> PurgeReport:
    """Delete the work folders under `work_root` not touched for `older_than_days` days.

    A folder whose name is in `in_use` (an unfinished job's, e.g. a pending approval's) is kept
    whatever its age; so is one with any file newer than the cutoff.
    """
    cutoff = (now if now is not None else time.time()) - older_than_days * SECONDS_PER_DAY
    report = PurgeReport(dry_run=dry_run)
    if not work_root.is_dir():
        return report
    for folder in sorted(p for p in work_root.iterdir() if p.is_dir()):
        if folder.name in in_use:
            report.kept_in_use.append(folder)
        elif _newest_mtime(folder) >= cutoff:
            report.kept_recent.append(folder)
        else:
            report.bytes_freed += _size(folder)
            report.deleted.append(folder)
            if not dry_run:
                shutil.rmtree(folder)
    return report
