"""Identifiers from outside (the PACS, the EHR) checked before a path or a URL is built from them.

A DICOM UID or a FHIR id read from a record is untrusted text: a SOP Instance UID holding `/`
would name a file outside the work folder, a Study Instance UID `../../etc` a URL outside the
DICOMweb root. Both formats are narrow (PS3.5 9.1, FHIR R4 `id`), so anything else is refused,
with where the value came from, before it is used.
"""

from __future__ import annotations

import re

_DICOM_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_DICOM_UID_MAX = 64
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class UnsafeIdentifierError(ValueError):
    """An identifier from a record is not of its format; nothing was built from it."""


def check_dicom_uid(value: object, where: str) -> str:
    """`value` if it is a DICOM UID (digits and dots, at most 64 characters); `where` names its source."""
    text = "" if value is None else str(value)
    if len(text) > _DICOM_UID_MAX or not _DICOM_UID.fullmatch(text):
        raise UnsafeIdentifierError(
            f"{where} is {text[:80]!r}, which is not a DICOM UID (digits and dots, at most 64 characters); "
            "it was refused before any file name or URL was built from it. Correct the record at its source."
        )
    return text


def check_fhir_id(value: object, where: str) -> str:
    """`value` if it is a FHIR id (1-64 of A-Z a-z 0-9 - .); `where` names its source."""
    text = "" if value is None else str(value)
    if not _FHIR_ID.fullmatch(text):
        raise UnsafeIdentifierError(
            f"{where} is {text[:80]!r}, which is not a FHIR id (1-64 of A-Z a-z 0-9 - .); "
            "it was refused before any URL was built from it. Correct the reference at its source."
        )
    return text
