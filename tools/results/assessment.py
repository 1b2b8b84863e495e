"""The AI result assessment record: a DICOM SR saying which AI results a person accepted or rejected.

After a decision the agent records, per result object (RTSTRUCT, SEG, SR), whether it was accepted
or rejected, by whom (TID 1002 person observer: name, login id, the issuer as organisation), when
and why — in the spirit of IHE AI Result Assessment (IHE Europe's AIRA / AIRAI). Its public
material describes the purpose (accepted / rejected / modified, by whom, referencing the results)
but no template we could read, so what follows is assumed and said in the README: a Comprehensive
SR (PS3.3 A.35.3) whose root container holds one container per assessed result with a COMPOSITE
reference to it, the assessment as a code and the time and reason. The codes come from the
private coding scheme ``99IMAGINGAGENT`` (PS3.16 8.2: "99" designators are local) until a
standard set is published. The document is final and verified by the deciding person.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import DT

from tools.results.common import MANUFACTURER
from tools.results.seg import pin_times

SCHEME = "99IMAGINGAGENT"
ASSESSMENT_SERIES_NUMBER = 9903
Assessment = Literal["accepted", "rejected", "modified"]

_REPORT = hd.sr.CodedConcept("AIRA-REPORT", SCHEME, "AI result assessment")
_ASSESSED = hd.sr.CodedConcept("AIRA-ITEM", SCHEME, "Assessed AI result")
_OBJECT = hd.sr.CodedConcept("AIRA-OBJECT", SCHEME, "AI result object")
_ASSESSMENT = hd.sr.CodedConcept("AIRA-ASSESSMENT", SCHEME, "Assessment")
_TIME = hd.sr.CodedConcept("AIRA-TIME", SCHEME, "Assessment date and time")
_REASON = hd.sr.CodedConcept("AIRA-REASON", SCHEME, "Reason")
_CORRECTED = hd.sr.CodedConcept("AIRA-CORRECTED", SCHEME, "Corrected result object")
_REASON_CODE = hd.sr.CodedConcept("AIRA-REASONCODE", SCHEME, "Reason code")
_VALUES = {
    "accepted": hd.sr.CodedConcept("ACCEPTED", SCHEME, "AI result accepted"),
    "rejected": hd.sr.CodedConcept("REJECTED", SCHEME, "AI result rejected"),
    "modified": hd.sr.CodedConcept("MODIFIED", SCHEME, "AI result modified"),
}


def assessment_uids(result_sop_instance_uids: Sequence[str], assessment: Assessment, decision_key: str) -> tuple[str, str]:
    """(series, instance) UIDs fixed by the results, the assessment and the decision (who, when): a
    retry of one decision writes the same object, another decision on the same results its own."""
    key = ",".join(sorted(result_sop_instance_uids))
    return (
        str(generate_uid(entropy_srcs=["assessment", key, assessment, decision_key, "series"])),
        str(generate_uid(entropy_srcs=["assessment", key, assessment, decision_key, "instance"])),
    )


def build_assessment_sr(
    results: Sequence[Dataset],
    assessment: Assessment,
    *,
    reviewer_name: str,
    reviewer_id: str,
    issuer: str,
    decided_at: datetime,
    reason: str | None,
    corrected: Sequence[Dataset] = (),
    reason_code: tuple[str, str] | None = None,
) -> Dataset:
    """The assessment of `results` (their headers: patient, study and SOP identity are read) by one person.

    "modified": the person corrected the results into `corrected` (what was stored instead), the
    same kinds of object built in the same order: each is referenced beside the AI's it replaces.
    `reason_code`: (code, display) from the rejection reasons' list, under this module's local scheme.
    """
    if not results:
        raise ValueError("an assessment needs at least one assessed result")
    if (assessment == "modified") != bool(corrected):
        raise ValueError("a 'modified' assessment names the corrected objects, and only it does")
    if corrected and len(corrected) != len(results):
        raise ValueError(f"{len(results)} AI result objects but {len(corrected)} corrected ones: they pair one to one")
    replacements: Sequence[Dataset | None] = corrected or [None] * len(results)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=_person_name(reviewer_name), login_name=reviewer_id[:64], organization_name=issuer[:64]
        ),
    )
    root = hd.sr.ContainerContentItem(name=_REPORT, template_id=None)
    items: list[Dataset] = [*observer]
    for result, replaced_by in zip(results, replacements, strict=True):
        item = hd.sr.ContainerContentItem(name=_ASSESSED, relationship_type="CONTAINS")
        children = [
            hd.sr.CompositeContentItem(
                name=_OBJECT,
                referenced_sop_class_uid=str(result.SOPClassUID),
                referenced_sop_instance_uid=str(result.SOPInstanceUID),
                relationship_type="CONTAINS",
            ),
            hd.sr.CodeContentItem(name=_ASSESSMENT, value=_VALUES[assessment], relationship_type="CONTAINS"),
            hd.sr.DateTimeContentItem(name=_TIME, value=decided_at.replace(tzinfo=None), relationship_type="CONTAINS"),
        ]
        if reason_code:
            value = hd.sr.CodedConcept(reason_code[0][:16], SCHEME, reason_code[1][:64])
            children.append(hd.sr.CodeContentItem(name=_REASON_CODE, value=value, relationship_type="CONTAINS"))
        if reason:
            children.append(hd.sr.TextContentItem(name=_REASON, value=reason[:1024], relationship_type="CONTAINS"))
        if replaced_by is not None:
            children.append(
                hd.sr.CompositeContentItem(
                    name=_CORRECTED,
                    referenced_sop_class_uid=str(replaced_by.SOPClassUID),
                    referenced_sop_instance_uid=str(replaced_by.SOPInstanceUID),
                    relationship_type="CONTAINS",
                )
            )
        item.ContentSequence = hd.sr.ContentSequence(children)
        items.append(item)
    root.ContentSequence = hd.sr.ContentSequence(items)
    decision_key = f"{issuer}|{reviewer_id}|{decided_at.isoformat()}"
    series_uid, instance_uid = assessment_uids([str(r.SOPInstanceUID) for r in results], assessment, decision_key)
    sr = hd.sr.ComprehensiveSR(
        evidence=[*results, *corrected],
        content=root,
        series_instance_uid=series_uid,
        series_number=ASSESSMENT_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=True,
        is_verified=True,
        verifying_observer_name=_person_name(reviewer_name),
        verifying_organization=issuer[:64],
        series_description=f"AI result assessment: {assessment}"[:64],
        content_date=decided_at.date(),
        content_time=decided_at.time().replace(tzinfo=None),
    )
    pin_times(sr, decided_at)
    # highdicom stamps the verification with the wall clock: the decision is the verification, and a
    # write step run again (a resume) must build the very bytes already stored.
    for observer in sr.VerifyingObserverSequence:
        observer.VerificationDateTime = DT(decided_at)
    # Declares the local scheme the codes come from (PS3.3 C.12.1.1.4).
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "imaging-agent AI result assessment codes"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def _person_name(display: str) -> str:
    # A display name ("Dr. Ana Lee") is one component; the trailing caret says so (PS3.5 6.2).
    text = display.replace("^", " ").strip()[:60] or "unknown"
    return f"{text}^"
