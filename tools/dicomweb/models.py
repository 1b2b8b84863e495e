"""Pydantic results of PACS queries and stores, shared by the DICOMweb and DIMSE clients.

Both protocols deliver query matches as DICOM data sets (QIDO-RS as DICOM JSON, PS3.18
Annex F; C-FIND as identifiers, PS3.4 C.4.1), so each summary is built from a
`pydicom.Dataset` and one converter serves both.
"""

from __future__ import annotations

import datetime as dt
import logging

from pydantic import BaseModel, Field
from pydicom import Dataset
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

log = logging.getLogger(__name__)

# PS3.18 Table I.2-1 gives 0xC122 its own meaning in STOW-RS; pynetdicom files it under
# the generic C-STORE "Cannot Understand" range.
_STOW_ONLY_REASONS = {0xC122: "Referenced Transfer Syntax not supported"}


def describe_store_status(code: int) -> str:
    """Readable text for a C-STORE status or STOW-RS FailureReason (PS3.4 B.2.3, PS3.18 I.2)."""
    if code in _STOW_ONLY_REASONS:
        return f"{_STOW_ONLY_REASONS[code]} (0x{code:04X})"
    category, text = STORAGE_SERVICE_CLASS_STATUS.get(code, ("Failure", "unknown status"))
    return f"{category}: {text or 'no detail'} (0x{code:04X})"


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value)


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return int(value)


def _float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return float(value)


def _date(ds: Dataset, keyword: str) -> dt.date | None:
    value = _text(ds, keyword)
    if value is None:
        return None
    try:
        return dt.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        # A malformed DA in a query result must not hide the study; the UID still works.
        log.warning("ignoring malformed %s value %r in a query result", keyword, value)
        return None


def _strings(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


class StudySummary(BaseModel):
    """One study as a QIDO-RS / C-FIND study-level match (PS3.18 Table 6.7.1-2)."""

    study_instance_uid: str
    patient_id: str | None = None
    patient_name: str = Field(default="", description="PN in DICOM form, e.g. 'Doe^John'; empty when absent")
    study_date: dt.date | None = None
    study_description: str | None = None
    accession_number: str | None = None
    modalities: list[str] = Field(default_factory=list)
    number_of_series: int | None = None
    number_of_instances: int | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> StudySummary:
        return cls(
            study_instance_uid=str(ds.StudyInstanceUID),
            patient_id=_text(ds, "PatientID"),
            patient_name=_text(ds, "PatientName") or "",
            study_date=_date(ds, "StudyDate"),
            study_description=_text(ds, "StudyDescription"),
            accession_number=_text(ds, "AccessionNumber"),
            modalities=_strings(ds, "ModalitiesInStudy"),
            number_of_series=_int(ds, "NumberOfStudyRelatedSeries"),
            number_of_instances=_int(ds, "NumberOfStudyRelatedInstances"),
        )


class SeriesSummary(BaseModel):
    """One series as a QIDO-RS series-level match (PS3.18 Table 6.7.1-2a)."""

    series_instance_uid: str
    modality: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    number_of_instances: int | None = None
    body_part_examined: str | None = None
    slice_thickness_mm: float | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> SeriesSummary:
        return cls(
            series_instance_uid=str(ds.SeriesInstanceUID),
            modality=_text(ds, "Modality"),
            series_number=_int(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription"),
            number_of_instances=_int(ds, "NumberOfSeriesRelatedInstances"),
            body_part_examined=_text(ds, "BodyPartExamined"),
            slice_thickness_mm=_float(ds, "SliceThickness"),
        )


class InstanceSummary(BaseModel):
    """One instance as a QIDO-RS instance-level match (PS3.18 Table 6.7.1-2b)."""

    sop_instance_uid: str
    sop_class_uid: str | None = None
    instance_number: int | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> InstanceSummary:
        return cls(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=_text(ds, "SOPClassUID"),
            instance_number=_int(ds, "InstanceNumber"),
        )


class StoreFailure(BaseModel):
    """One instance the PACS refused, with its reason (STOW-RS FailedSOPSequence or C-STORE status)."""

    sop_instance_uid: str
    sop_class_uid: str | None = None
    status: int | None = Field(default=None, description="FailureReason / C-STORE status code")
    reason: str


class StoreResult(BaseModel):
    """What a STOW-RS or C-STORE run stored and what it did not."""

    stored: list[str] = Field(default_factory=list, description="SOP Instance UIDs the PACS accepted")
    failed: list[StoreFailure] = Field(default_factory=list)
    bytes_sent: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def merge(self, other: StoreResult) -> StoreResult:
        return StoreResult(
            stored=self.stored + other.stored,
            failed=self.failed + other.failed,
            bytes_sent=self.bytes_sent + other.bytes_sent,
            elapsed_s=self.elapsed_s + other.elapsed_s,
        )
