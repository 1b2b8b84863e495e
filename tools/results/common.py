"""What every derived DICOM object shares: deterministic UIDs, bytes and hash, equipment.

Derived UIDs are deterministic (docs/architecture.md, idempotent writes): the same source series,
engine, engine version and ROI set always give the same Series and SOP Instance UIDs, so a
retry or a resumed run produces objects the PACS already has instead of duplicates.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Literal

from pydantic import BaseModel
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from tools.segmentation.base import SegmentationResult

DerivedKind = Literal["RTSTRUCT", "SEG", "SR", "SC", "KO"]

logger = logging.getLogger(__name__)

MANUFACTURER = "imaging-agent"
SOFTWARE_VERSION = "0.1.0"


class ResultBuildError(ValueError):
    """A result object could not be built from these inputs; the message names the series."""


class DerivedObject(BaseModel):
    """One DICOM object we built: what the approver sees and what the writer checks."""

    kind: DerivedKind
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    sha256: str
    size_bytes: int
    path: Path | None = None


def derived_uid(
    source_series_uid: str,
    engine: str,
    engine_version: str,
    roi_keys: Sequence[str],
    kind: DerivedKind,
    role: str,
    edit: str | None = None,
) -> str:
    """A UID fixed by its inputs. `role` separates the series UID from the instance UID; `edit`
    (a reviewer's correction, :func:`edit_digest`) makes the corrected version a new object."""
    sources = [source_series_uid, engine, engine_version, ",".join(sorted(roi_keys)), kind, role]
    return generate_uid(entropy_srcs=[*sources, f"edit:{edit}"] if edit else sources)


def edit_digest(result: SegmentationResult) -> str | None:
    """What names a reviewer-corrected result in its UIDs; None for the AI's own result."""
    return result.edit.digest if result.edit else None


def dataset_bytes(ds: Dataset) -> bytes:
    """The exact Part 10 file bytes that get hashed, approved and stored."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def encoded(ds: Dataset, kind: DerivedKind) -> tuple[bytes, DerivedObject]:
    """The Part 10 bytes of `ds` and their description, from one serialisation.

    Serialising is the costly half of a large SEG (thousands of per-frame items): callers that
    write the file take the bytes from here instead of serialising the dataset again.
    """
    data = dataset_bytes(ds)
    logger.info("Encoded %s %s for series %s: %d bytes", kind, ds.SOPInstanceUID, ds.SeriesInstanceUID, len(data))
    return data, describe(ds, kind, data)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe(ds: Dataset, kind: DerivedKind, data: bytes, path: Path | None = None) -> DerivedObject:
    return DerivedObject(
        kind=kind,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        sha256=sha256_hex(data),
        size_bytes=len(data),
        path=path,
    )


def contributing_equipment(engine: str, engine_version: str) -> Dataset:
    """A Contributing Equipment Sequence item naming the algorithm (PS3.3 C.12.1; IHE AI Results).

    Purpose of Reference is (DCM, 109102, "Processing Equipment"): the equipment that derived
    this object from the source images.
    """
    purpose = Dataset()
    purpose.CodeValue = "109102"
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = "Processing Equipment"
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [purpose]
    item.Manufacturer = MANUFACTURER
    item.ManufacturerModelName = engine[:64]
    item.SoftwareVersions = [f"{engine} {engine_version}"[:64], f"imaging-agent {SOFTWARE_VERSION}"]
    return item


def new_dataset(sop_class_uid: str, sop_instance_uid: str, created_date: str, created_time: str) -> Dataset:
    """An empty Part 10 dataset with its file meta and SOP Common basics (PS3.3 C.12.1).

    UTF-8 (ISO_IR 192) encodes whatever names the source holds, whatever its own character set.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "IMAGING_AGENT"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = created_date
    ds.InstanceCreationTime = created_time
    return ds
