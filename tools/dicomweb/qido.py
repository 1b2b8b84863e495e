"""QIDO-RS query strings and the client-side check of what they match (PS3.18 10.6).

Built here rather than by dicomweb-client because of an Orthanc quirk (see `qido_query`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pydicom
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

# Wildcard matching applies to these VRs only (PS3.4 C.2.2.2.4).
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
# Characters that reach the server unchanged through requests/urllib3 and need no decoding.
_RAW_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~*?,")


def _attribute(key: str) -> tuple[str, str]:
    """(tag as 8 hex digits, VR) of a filter key given as keyword or tag."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", key):
        tag = int(key, 16)
    else:
        found = tag_for_keyword(key)
        if found is None:
            raise ValueError(
                f"QIDO filter {key!r} is neither a DICOM keyword nor an 8-digit tag; "
                f"use e.g. 'PatientName' or '00100010'"
            )
        tag = found
    return f"{tag:08X}", dictionary_VR(tag)


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def qido_query(
    filters: Mapping[str, str], include_fields: Sequence[str] = (), limit: int | None = None
) -> tuple[str, dict[str, re.Pattern[str]]]:
    """The QIDO-RS query string, and the client-side checks it needs.

    Orthanc 1.10 with DICOMweb plugin 1.7 does not percent-decode query values, so a
    percent-encoded ``*`` or ``^`` matches nothing; and urllib3 always percent-encodes
    ``^``, space and non-ASCII characters. So values are sent raw, and any character
    that cannot travel raw is replaced by the single-character wildcard ``?`` (PS3.4
    C.2.2.2.4). That widens the match, so each such filter comes back as a pattern
    (keyed by tag) that the results must match to be kept (`matches`).
    """
    parts: list[str] = []
    checks: dict[str, re.Pattern[str]] = {}
    for key, value in filters.items():
        tag, vr = _attribute(key)
        if all(c in _RAW_SAFE for c in value):
            wire = value
        elif vr in _WILDCARD_VRS:
            wire = "".join(c if c in _RAW_SAFE else "?" for c in value)
            checks[tag] = _wildcard_regex(value)
        else:
            raise ValueError(
                f"QIDO filter {key}={value!r}: a {vr} value can only hold letters, digits "
                f"and '-._,'; check the value"
            )
        parts.append(f"{tag}={wire}")
    for field in [*include_fields, *(keyword_for_tag(int(t, 16)) or t for t in checks)]:
        parts.append(f"includefield={_attribute(field)[0]}")
    if limit is not None:
        parts.append(f"limit={int(limit)}")
    return "&".join(parts), checks


def matches(ds: Dataset, checks: Mapping[str, re.Pattern[str]]) -> bool:
    """Whether a QIDO result satisfies the filters `qido_query` had to widen."""
    for tag, pattern in checks.items():
        element = ds.get(int(tag, 16))
        value = element.value if element is not None else None
        values = value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]
        if not any(pattern.fullmatch("" if v is None else str(v)) for v in values):
            return False
    return True
