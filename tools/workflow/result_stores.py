"""Where approved objects are stored, and how what the PACS holds is compared with what was approved.

DICOMweb (STOW-RS, the default) returns the stored file as it is (WADO-RS `application/dicom`), so
the comparison is the sha256 of the file. A PACS reached over DIMSE only (C-STORE) sends an
instance back by C-GET re-encoded by the network layer, with a file meta of its own: there the
comparison is the sha256 of the data set re-encoded canonically (Explicit VR Little Endian, no
file meta), which any change of an element or of the pixels alters. Presence is asked first with an
image-level C-FIND, as the issue and PACS vendors do.
"""

from __future__ import annotations

import copy
import hashlib
import io
from collections.abc import Sequence
from typing import Protocol

from pydicom import Dataset, dcmread
from pynetdicom.dsutils import encode

from tools.dicomweb.client import DicomwebClient
from tools.dicomweb.errors import PacsError
from tools.dicomweb.models import StoreResult
from tools.dimse.client import DimseClient
from tools.workflow.approval import PendingDicomWrite


class ResultStore(Protocol):
    digest_name: str
    """What the digests are, for messages and the AuditEvent: e.g. 'sha256 of the file'."""

    @property
    def destination(self) -> str:
        """Where results go, for the audit index: the DICOMweb URL or the DIMSE peer."""
        ...

    def held_digest(self, study_instance_uid: str, write: PendingDicomWrite) -> str | None:
        """The digest of what the PACS holds under the write's UIDs, or None when it holds nothing there."""
        ...

    def approved_digest(self, data: bytes) -> str:
        """The digest of the approved file, comparable with `held_digest`."""
        ...

    def store(self, files: Sequence[bytes]) -> StoreResult: ...


class DicomwebResults:
    digest_name = "sha256 of the file"

    def __init__(self, pacs: DicomwebClient) -> None:
        self.pacs = pacs

    @property
    def destination(self) -> str:
        return f"DICOMweb {self.pacs.url}"

    def held_digest(self, study_instance_uid: str, write: PendingDicomWrite) -> str | None:
        held = self.pacs.retrieve_instance_bytes(study_instance_uid, write.series_instance_uid, write.sop_instance_uid)
        return None if held is None else hashlib.sha256(held).hexdigest()

    def approved_digest(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def store(self, files: Sequence[bytes]) -> StoreResult:
        return self.pacs.store_part10(files)


def dataset_sha256(ds: Dataset) -> str:
    """sha256 of the data set alone in Explicit VR Little Endian: the same for any transfer of it."""
    body = copy.copy(ds)
    body.file_meta = Dataset()
    encoded = encode(body, False, True)
    if encoded is None:
        raise ValueError(f"instance {ds.get('SOPInstanceUID', '?')} cannot be encoded in Explicit VR Little Endian")
    return hashlib.sha256(encoded).hexdigest()


class DimseResults:
    digest_name = "sha256 of the data set (Explicit VR Little Endian, no file meta)"

    def __init__(self, dimse: DimseClient) -> None:
        self.dimse = dimse

    @property
    def destination(self) -> str:
        return f"DIMSE {self.dimse.peer}"

    def held_digest(self, study_instance_uid: str, write: PendingDicomWrite) -> str | None:
        if write.sop_instance_uid not in self.dimse.find_instances(study_instance_uid, write.series_instance_uid):
            return None
        held = self.dimse.get_instance(
            study_instance_uid, write.series_instance_uid, write.sop_instance_uid, write.sop_class_uid
        )
        if held is None:
            raise PacsError(
                f"{self.dimse.peer} lists {write.kind} {write.sop_instance_uid} of study {study_instance_uid} (C-FIND) "
                "but sends nothing for it (C-GET), so its bytes cannot be checked. What to do: allow C-GET for "
                f"{self.dimse.calling_aet} at the PACS, or store over DICOMweb."
            )
        return dataset_sha256(held)

    def approved_digest(self, data: bytes) -> str:
        return dataset_sha256(dcmread(io.BytesIO(data)))

    def store(self, files: Sequence[bytes]) -> StoreResult:
        return self.dimse.store_part10(files)
