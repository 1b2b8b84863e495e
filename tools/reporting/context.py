"""The text sent with a radiograph study to a report model: indication, technique, comparison.

The indication is the order's reason (the ImagingStudy's ServiceRequest, ``reasonCode`` text or
display): free text from the EHR, so before it leaves the hospital the patient's names and
identifiers are cut out, runs of six or more digits (record numbers, phone numbers) too, and it is
cut to INDICATION_MAX characters. The technique is written here from the images' View Position,
never copied from a header. No comparison is sent: priors are not looked up (yet).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from tools.fhir.client import FhirClient
from tools.ids import check_fhir_id
from tools.reporting.models import ReportContext

INDICATION_MAX = 300
_REMOVED = "[removed]"
_LONG_NUMBER = re.compile(r"\d{6,}")


def scrub(text: str, names: Iterable[str], identifiers: Iterable[str]) -> str:
    """`text` without the given names (each part of at least two letters) and identifiers, case-insensitively."""
    words = {part for name in names for part in re.split(r"[\s^,]+", name) if len(part) >= 2}
    for word in sorted({*words, *(i for i in identifiers if i)}, key=len, reverse=True):
        text = re.sub(re.escape(word), _REMOVED, text, flags=re.IGNORECASE)
    text = _LONG_NUMBER.sub(_REMOVED, text)
    return " ".join(text.split())[:INDICATION_MAX]


def technique(views: Sequence[str | None]) -> str:
    shown = [v for v in views if v]
    frontal = next((v for v in shown if v in ("PA", "AP")), None)
    lateral = any(v not in ("PA", "AP") for v in shown)
    first = f"{frontal} view" if frontal else "Frontal view"
    return f"{first} and lateral view of the chest." if lateral else f"{first} of the chest."


def indication(fhir: FhirClient, imaging_study_id: str) -> str:
    """The reasons of the ServiceRequests the ImagingStudy is based on, as one line (unscrubbed)."""
    study = fhir.read("ImagingStudy", imaging_study_id)
    reasons: list[str] = []
    for reference in study.basedOn or []:
        ref = reference.reference or ""
        if not ref.startswith("ServiceRequest/"):
            continue
        order = fhir.read("ServiceRequest", check_fhir_id(ref.split("/", 1)[1], f"basedOn of ImagingStudy/{imaging_study_id}"))
        for reason in order.reasonCode or []:
            text = reason.text or next((c.display for c in reason.coding or [] if c.display), None)
            if text:
                reasons.append(text)
    return "; ".join(reasons)


def report_context(
    fhir: FhirClient, imaging_study_id: str, views: Sequence[str | None], names: Iterable[str], identifiers: Iterable[str]
) -> ReportContext:
    return ReportContext(
        indication=scrub(indication(fhir, imaging_study_id), names, identifiers),
        technique=technique(views),
        comparison="None.",
    )
