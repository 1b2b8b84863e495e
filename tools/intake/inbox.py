"""The node's inbox: each received instance checked, then written whole before success is answered.

Layout: ``ROOT/<Study Instance UID>/<Series Instance UID>/<SOP Instance UID>.dcm`` (UIDs checked
first, so no name leaves the inbox). A write goes to a temporary file, is flushed to disk and
renamed into place: a crash leaves either the whole instance or nothing, and the sender gets
success only afterwards (PS3.4 B.2.3: the SCP answers a C-STORE once it has the instance).
A duplicate push replaces the file with the same content; a series already taken into work
stays taken (``.taken`` marker), so a re-push never starts a second job by itself; a series whose
intake failed (``.failed``) is tried again once more of it is pushed.

A series counts only once an association that stored into it ended with a release: each
association leaves an ``.open-<id>`` marker in the series it writes to and removes it (and any
older one) on release. A sender that aborted, or a node killed mid-push, leaves the marker, so
that partial series waits for a push that completes instead of being processed half.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

from pydantic import BaseModel
from pydicom import Dataset
from pydicom.filewriter import dcmwrite

from tools.ids import UnsafeIdentifierError, check_dicom_uid

log = logging.getLogger(__name__)

TAKEN_MARKER = ".taken"
FAILED_MARKER = ".failed"
OPEN_MARKER = ".open-"


class RefusedInstance(ValueError):
    """An instance the inbox will not keep; the message says which and why (for the log and the status)."""


class ReceivedSeries(BaseModel):
    """A series in the inbox: where its files are and when the last one arrived."""

    study_instance_uid: str
    series_instance_uid: str
    folder: Path
    instances: int
    last_arrival: float

    def files(self) -> list[Path]:
        """The kept instances only: not the markers, nor a `.part` file a killed write left."""
        return sorted(self.folder.glob("*.dcm"))


class Inbox:
    """Received instances on disk, grouped by study and series."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        # Writes a killed node left unfinished: never answered success, so the sender has them still.
        for staged in self.root.glob("*/*/.*.part"):
            staged.unlink(missing_ok=True)

    def keep(self, ds: Dataset, association: str) -> Path:
        """Check `ds` and write it whole, as received on `association` (an id unique to it); returns
        its path. Raises RefusedInstance or OSError."""
        study, series, sop = (self._uid(ds, keyword) for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
        if "SOPClassUID" not in ds:
            raise RefusedInstance(f"instance {sop} has no SOP Class UID")
        owner = self._study_of_series(series)
        if owner is not None and owner != study:
            raise RefusedInstance(
                f"instance {sop} says series {series} belongs to study {study}, but that series arrived in study {owner}"
            )
        folder = self.root / study / series
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{OPEN_MARKER}{association}").touch(exist_ok=True)
        # New images for a series that failed: try it again once they are complete.
        (folder / FAILED_MARKER).unlink(missing_ok=True)
        path = folder / f"{sop}.dcm"
        staged = folder / f".{sop}.{secrets.token_hex(4)}.part"
        try:
            with staged.open("wb") as handle:
                dcmwrite(handle, ds, enforce_file_format=True)
                handle.flush()
                os.fsync(handle.fileno())
            staged.replace(path)
        finally:
            staged.unlink(missing_ok=True)
        return path

    def series(self) -> list[ReceivedSeries]:
        """Every whole series in the inbox not yet taken into work, with its newest arrival time."""
        found: list[ReceivedSeries] = []
        for study in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for series in sorted(p for p in study.iterdir() if p.is_dir()):
                if (series / TAKEN_MARKER).exists() or (series / FAILED_MARKER).exists() or any(series.glob(f"{OPEN_MARKER}*")):
                    continue
                files = list(series.glob("*.dcm"))
                if not files:
                    continue
                found.append(
                    ReceivedSeries(
                        study_instance_uid=study.name,
                        series_instance_uid=series.name,
                        folder=series,
                        instances=len(files),
                        last_arrival=max(f.stat().st_mtime for f in files),
                    )
                )
        return found

    def stable(self, stable_age_s: float, now: float | None = None) -> list[ReceivedSeries]:
        """Series that received nothing for `stable_age_s`: complete, as far as a push can tell
        (DICOM has no end-of-series message; Orthanc's StableAge decides the same way)."""
        now = time.time() if now is None else now
        return [s for s in self.series() if now - s.last_arrival >= stable_age_s]

    def released(self, association: str, started: float) -> None:
        """The association ended with a release: what it stored is whole, and so is anything an
        association aborted before it began (the sender has pushed the series again since)."""
        for marker in self.root.glob(f"*/*/{OPEN_MARKER}{association}"):
            folder = marker.parent
            for other in folder.glob(f"{OPEN_MARKER}*"):
                if other == marker or other.stat().st_mtime < started:
                    other.unlink(missing_ok=True)

    def take(self, series: ReceivedSeries, note: str) -> None:
        """Mark a series as taken into work (`note`: what it became), so it is never started twice."""
        (series.folder / TAKEN_MARKER).write_text(note + "\n")

    def fail(self, series: ReceivedSeries, reason: str) -> None:
        """Set a series aside after a failure (`reason` kept beside it) until more of it is pushed."""
        (series.folder / FAILED_MARKER).write_text(reason + "\n")

    def _study_of_series(self, series: str) -> str | None:
        for folder in self.root.glob(f"*/{series}"):
            return folder.parent.name
        return None

    @staticmethod
    def _uid(ds: Dataset, keyword: str) -> str:
        try:
            return check_dicom_uid(ds.get(keyword), f"the received instance's {keyword}")
        except UnsafeIdentifierError as exc:
            raise RefusedInstance(str(exc)) from exc
