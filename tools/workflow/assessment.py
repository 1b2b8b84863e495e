"""After a decision: the assessment of each AI result, as a DICOM SR in the PACS and an Observation in FHIR.

Written after the person decided, never before, for an approval (with the results, same study) and
for a rejection (the rejected results never reach the PACS, so the record names UIDs the PACS does
not hold: it is the trace that they were produced and refused). The SR is stored and verified like
every approved object (tools/workflow/write.py `store_approved`); its UIDs are fixed by the results
and the assessment, and the Observation is a conditional create on the SR's UID, so a retry
writes nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.observation import Observation, ObservationComponent
from fhir.resources.R4B.reference import Reference
from pydicom import dcmread

from tools.fhir.builders import DICOM_UID_SYSTEM, uid_search_token
from tools.fhir.client import FhirClient
from tools.fhir.search_values import condition
from tools.results.assessment import Assessment, build_assessment_sr
from tools.results.common import dataset_bytes
from tools.workflow.approval import ApprovalDecision, PendingDicomWrite
from tools.workflow.rejection_reasons import reason_coding, reason_display
from tools.workflow.result_stores import ResultStore
from tools.workflow.write import store_approved

ASSESSMENT_CODE_SYSTEM = "urn:imaging-agent:ai-result-assessment"


def record_assessment(
    results: ResultStore,
    fhir: FhirClient,
    study_instance_uid: str,
    task_id: str,
    writes: Sequence[PendingDicomWrite],
    decision: ApprovalDecision,
    corrected: Sequence[PendingDicomWrite] = (),
) -> str:
    """Store the assessment SR of `writes` (the AI's objects) and its Observation; returns the SR's
    SOP Instance UID. `corrected`: the reviewer's corrected objects, approved and stored instead."""
    assessment: Assessment = (
        "rejected" if decision.action != "approve" else "modified" if corrected else "accepted"
    )
    headers = [dcmread(w.path, stop_before_pixels=True) for w in writes]
    sr = build_assessment_sr(
        headers,
        assessment,
        reviewer_name=decision.reviewer_name,
        reviewer_id=decision.reviewer_id,
        issuer=decision.issuer,
        decided_at=decision.decided_at,
        reason=decision.reason,
        corrected=[dcmread(w.path, stop_before_pixels=True) for w in corrected],
        reason_code=(decision.reason_code, reason_display(decision.reason_code)) if decision.reason_code else None,
    )
    data = dataset_bytes(sr)
    path = Path(writes[0].path).parent / f"assessment-{assessment}.dcm"
    path.write_bytes(data)
    record = PendingDicomWrite(
        kind="ASSESSMENT SR",
        sop_class_uid=str(sr.SOPClassUID),
        sop_class_name="Comprehensive SR",
        sop_instance_uid=str(sr.SOPInstanceUID),
        series_instance_uid=str(sr.SeriesInstanceUID),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        path=str(path),
    )
    store_approved(results, fhir, study_instance_uid, [record])
    task = fhir.read("Task", task_id)
    observation = Observation(
        status="final",
        identifier=[Identifier(system=DICOM_UID_SYSTEM, value=f"urn:oid:{sr.SOPInstanceUID}")],
        code=CodeableConcept(text="AI result assessment"),
        subject=task.for_fhir,
        focus=[Reference(reference=f"Task/{task_id}")],
        effectiveDateTime=decision.decided_at,
        performer=[
            Reference(
                identifier=Identifier(system=decision.issuer, value=decision.reviewer_id), display=decision.reviewer_name
            )
        ],
        valueCodeableConcept=CodeableConcept(
            coding=[Coding(system=ASSESSMENT_CODE_SYSTEM, code=assessment, display=f"AI result {assessment}")]
        ),
        note=[{"text": decision.reason}] if decision.reason else None,
        component=[
            *(
                ObservationComponent(code=CodeableConcept(text=f"assessed {w.kind}"), valueString=f"urn:oid:{w.sop_instance_uid}")
                for w in writes
            ),
            *(
                ObservationComponent(code=CodeableConcept(text=f"corrected {w.kind}"), valueString=f"urn:oid:{w.sop_instance_uid}")
                for w in corrected
            ),
        ]
        + (
            [
                ObservationComponent(
                    code=CodeableConcept(text="rejection reason"),
                    valueCodeableConcept=CodeableConcept(coding=[reason_coding(decision.reason_code)]),
                )
            ]
            if decision.reason_code
            else []
        ),
    )
    fhir.create(observation, if_none_exist=condition("identifier", uid_search_token(str(sr.SOPInstanceUID))))
    return str(sr.SOPInstanceUID)
