"""STOW-RS request bodies and responses (PS3.18 10.5).

Bodies are built here because dicomweb-client writes a dataset built in memory without
its PS3.10 preamble and file meta (Orthanc stores it, then WADO-RS returns files pydicom
cannot read).
"""

from __future__ import annotations

import copy
import io
import uuid
from collections.abc import Sequence

import pydicom
import requests
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset

from tools.dicomweb.models import StoreFailure, StoreResult, describe_store_status


def part10_bytes(ds: Dataset) -> bytes:
    """``ds`` as a PS3.10 file (preamble, complete file meta), leaving ``ds`` untouched."""
    clone = copy.copy(ds)
    clone.file_meta = FileMetaDataset(ds.file_meta)
    with io.BytesIO() as buffer:
        pydicom.dcmwrite(buffer, clone, enforce_file_format=True)
        return buffer.getvalue()


def encode_for_stow(ds: Dataset) -> tuple[bytes, StoreFailure | None]:
    """The PS3.10 bytes to send, or why ``ds`` cannot be sent at all."""
    needed = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    missing = [k for k in needed if not ds.get(k)]
    if not getattr(ds, "file_meta", None) or not ds.file_meta.get("TransferSyntaxUID"):
        missing.append("file meta TransferSyntaxUID")
    reason = f"not sent: missing {', '.join(missing)}; fill them before storing" if missing else None
    encoded = b""
    if reason is None:
        try:
            encoded = part10_bytes(ds)
        except (ValueError, TypeError, AttributeError) as exc:
            reason = f"not sent: pydicom cannot encode it ({exc})"
    if reason is None:
        return encoded, None
    sop_uid = str(ds.get("SOPInstanceUID", "")) or "<no SOP Instance UID>"
    return b"", StoreFailure(sop_instance_uid=sop_uid, sop_class_uid=ds.get("SOPClassUID"), reason=reason)


def stow_request(files: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
    """The multipart/related body holding ``files`` and the headers that announce it."""
    boundary = uuid.uuid4().hex.encode()
    body = b"".join(
        b"\r\n--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + encoded for encoded in files
    ) + b"\r\n--" + boundary + b"--\r\n"
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary.decode()}',
        "Accept": "application/dicom+json",
    }
    return body, headers


def stow_response_body(response: requests.Response) -> Dataset | None:
    """The STOW-RS response data set, if the response carries one.

    Orthanc sends it without a Content-Type on 409, so the body is tried as DICOM JSON
    whatever the header says.
    """
    if not response.content:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not ({"00081198", "00081199"} & body.keys()):
        return None
    return Dataset.from_json(body)


def stow_outcome(answer: Dataset, sent: Sequence[Dataset]) -> StoreResult:
    """Stored and failed instances from a STOW-RS response (PS3.18 Table 10.5.3-1)."""
    result = StoreResult()
    for item in answer.get("ReferencedSOPSequence", []):
        result.stored.append(str(item.ReferencedSOPInstanceUID))
    for item in answer.get("FailedSOPSequence", []):
        code = item.get("FailureReason")
        result.failed.append(
            StoreFailure(
                sop_instance_uid=str(item.get("ReferencedSOPInstanceUID", "")),
                sop_class_uid=item.get("ReferencedSOPClassUID"),
                status=code,
                reason=describe_store_status(code) if code is not None else "no FailureReason given",
            )
        )
    answered = set(result.stored) | {f.sop_instance_uid for f in result.failed}
    for ds in sent:
        if str(ds.SOPInstanceUID) not in answered:
            # Orthanc drops instances it cannot index without listing them as failed.
            result.failed.append(
                StoreFailure(
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=ds.get("SOPClassUID"),
                    reason="the PACS reported neither success nor failure for it; check the PACS log and resend",
                )
            )
    return result
