"""Why a reviewer rejected an AI result: a short coded list, plus the reviewer's own words.

The codes make rejections countable (which engine leaks, which misses a lung) where free text is
not; the free text says what the code cannot. The system URI names this list in the FHIR Task's
statusReason and the assessment Observation; the assessment SR carries the same code under the
project's local scheme (tools/results/assessment.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

# fhir.resources is imported where a Coding is built: the CLI lists these codes in --help.
if TYPE_CHECKING:
    from fhir.resources.R4B.coding import Coding

REJECTION_REASON_SYSTEM = "urn:imaging-agent:rejection-reason"

RejectionReasonCode = Literal["wrong-series", "contour-leak", "missed-lung", "image-quality", "wrong-patient", "other"]

REJECTION_REASONS: dict[str, str] = {
    "wrong-series": "Wrong series segmented",
    "contour-leak": "Contour leaks outside the structure",
    "missed-lung": "Lung (or part of it) missed",
    "image-quality": "Image quality too poor to contour",
    "wrong-patient": "Images of another patient",
    "other": "Other (see the reason text)",
}


def reason_display(code: str) -> str:
    """The code's display text (a code this list does not know is shown as it is)."""
    return REJECTION_REASONS.get(code, code)


def reason_coding(code: str) -> Coding:
    """The code as FHIR carries it (Task.statusReason, the assessment Observation)."""
    from fhir.resources.R4B.coding import Coding

    return Coding(system=REJECTION_REASON_SYSTEM, code=code, display=reason_display(code))
