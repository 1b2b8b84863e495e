"""The study steps at and after approval: record the decision, store exactly the approved bytes in
the PACS, report in FHIR, or record a rejection or a failure.

Only the study graph's approval node leads here (see docs/architecture.md, "Approval"); these
functions trust nothing they are handed that the approval did not fix: every file is re-hashed
against the approved list, what the PACS holds under each UID is hashed against it too, the
ImagingStudy is re-read and checked before the FHIR write.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.fhir.client import FhirClient
from tools.fhir.errors import FhirConflictError, FhirError
from tools.fhir.task import set_status
from tools.fhir.worklist import study_instance_uid as uid_of_study
from tools.http.retry import ServiceUnavailableError
from tools.results.fhir_report import WritebackPlan, build_writeback_transaction
from tools.workflow.approval import ApprovalDecision, ApprovalRequest, PendingDicomWrite
from tools.workflow.audit import record_pacs_mismatch
from tools.workflow.decisions import DecisionStore, request_sha256
from tools.workflow.failure import StudyFailure
from tools.workflow.records import ApprovedPlan
from tools.workflow.rejection_reasons import reason_coding, reason_display
from tools.workflow.result_stores import ResultStore


def recorded_decision(
    decisions: DecisionStore, thread_id: str | None, request: ApprovalRequest
) -> ApprovalDecision | None:
    """A decision recorded for exactly this request (same job, result and payload), if any."""
    if not thread_id:
        return None
    return decisions.get(thread_id, request.request_id, request_sha256(request))


def record_approval(fhir: FhirClient, decisions: DecisionStore, task_id: str, approved: ApprovedPlan) -> None:
    """Note the approved plan locally and in the Task, before any write.

    If the FHIR half fails after the PACS half, the next run finishes it from this plan without a
    second approval (and only when the local table holds this very plan).
    """
    recorded = approved.model_dump(mode="json")
    decisions.remember_plan(approved.plan.result_uid, recorded)
    decision = approved.decision
    set_status(
        fhir,
        task_id,
        "in-progress",
        business="approved",
        plan_json=json.dumps(recorded),
        note=(
            f"approved {'AUTOMATICALLY (--yes, no human review) ' if decision.automatic else ''}"
            f"by {decision.reviewer_name} ({decision.reviewer_id}) at {decision.decided_at.isoformat()}"
        ),
    )


def store_approved(
    results: ResultStore, fhir: FhirClient, study_instance_uid: str, writes: Sequence[PendingDicomWrite]
) -> list[str]:
    """Store exactly the approved objects; returns the SOP Instance UIDs stored by this call.

    Derived UIDs are predictable, so an object already in the PACS under one of them is compared
    with the approved one (tools/workflow/result_stores.py says how, per protocol): the same is a
    repeat of our own earlier store, anything else fails the study with an AuditEvent. Every object
    stored is read back and compared too: a PACS that answers success without storing, or stores
    something else, fails it.
    """
    blobs: list[tuple[PendingDicomWrite, bytes]] = []
    for write in writes:
        data = Path(write.path).read_bytes()
        # The bytes hashed are the bytes sent: no second read between check and store.
        if hashlib.sha256(data).hexdigest() != write.sha256:
            raise StudyFailure(
                f"{write.kind} {write.sop_instance_uid} of study {study_instance_uid} changed after it was "
                "approved (sha256 differs); nothing was stored. Run the study again and review the new result."
            )
        blobs.append((write, data))
    missing = []
    for write, data in blobs:
        held = results.held_digest(study_instance_uid, write)
        if held is None:
            missing.append((write, data))
        else:
            _check_held(fhir, results, study_instance_uid, write, data, held, "already there before this store; nothing was stored")
    if not missing:
        return []
    result = results.store([data for _, data in missing])
    if result.failed:
        reasons = "; ".join(f"{f.sop_instance_uid}: {f.reason}" for f in result.failed)
        raise StudyFailure(f"the PACS refused results of study {study_instance_uid}: {reasons}")
    for write, data in missing:
        held = results.held_digest(study_instance_uid, write)
        if held is None:
            raise StudyFailure(
                f"the PACS accepted {write.kind} {write.sop_instance_uid} of study {study_instance_uid} but does "
                "not hold it when read back; nothing was reported in FHIR. Check the PACS (storage, logs), "
                "then run the study again."
            )
        _check_held(fhir, results, study_instance_uid, write, data, held, "read back after this store")
    return [w.sop_instance_uid for w, _ in missing]


def _check_held(
    fhir: FhirClient,
    results: ResultStore,
    study_instance_uid: str,
    write: PendingDicomWrite,
    data: bytes,
    held: str,
    when: str,
) -> None:
    """The PACS's object is the approved one, or an AuditEvent records the difference and the study fails."""
    approved = results.approved_digest(data)
    if held == approved:
        return
    try:
        audit = record_pacs_mismatch(fhir, study_instance_uid, write, held, f"{when}; PACS digest: {results.digest_name}")
    except (FhirError, ServiceUnavailableError) as exc:
        audit = f"no AuditEvent (the FHIR server failed: {exc})"
    raise StudyFailure(
        f"the PACS holds another object than the approved one under {write.kind} {write.sop_instance_uid} "
        f"of study {study_instance_uid} ({when}): approved {results.digest_name} {approved}, PACS {held}; "
        f"recorded as {audit}. Nothing was reported in FHIR. Have the PACS administrator inspect and remove "
        "that object (it may be forged), then run the study again."
    )


def report_to_fhir(fhir: FhirClient, task_id: str, approved: ApprovedPlan) -> str:
    """One FHIR transaction (ImagingStudy available, DiagnosticReport, Observations, Provenance,
    AuditEvent), then the Task completed; returns the DiagnosticReport reference."""
    plan, decision = approved.plan, approved.decision
    for attempt in range(2):
        study = fhir.read("ImagingStudy", plan.imaging_study_id)
        _check_still_the_approved_study(study, plan)
        current = plan.model_copy(update={"imaging_study_version": study.meta.versionId if study.meta else None})
        bundle = build_writeback_transaction(current, study, decision.reviewer(), decision.decided_at)
        try:
            response = fhir.transaction(bundle)
            break
        except FhirConflictError:
            if attempt == 1:
                raise StudyFailure(
                    f"ImagingStudy/{plan.imaging_study_id} kept changing while the results were being "
                    "reported (two version conflicts). The DICOM results are stored; run the study "
                    "again to finish the FHIR report."
                ) from None
    report_ref = _location_of(response, "DiagnosticReport")
    set_status(
        fhir, task_id, "completed", business="reported", outputs=[report_ref, f"ImagingStudy/{plan.imaging_study_id}"]
    )
    return report_ref


def record_rejection(fhir: FhirClient, task_id: str, decision: ApprovalDecision) -> None:
    set_status(
        fhir,
        task_id,
        "rejected",
        business="rejected by reviewer",
        # The reviewer's words when given; a code alone is shown by its display text.
        reason=decision.reason or (reason_display(decision.reason_code) if decision.reason_code else None),
        reason_coding=reason_coding(decision.reason_code) if decision.reason_code else None,
        note=f"rejected by {decision.reviewer_name} ({decision.reviewer_id}) at {decision.decided_at.isoformat()}",
    )


def record_failure(fhir: FhirClient, task_id: str, reason: str) -> None:
    set_status(fhir, task_id, "failed", business="failed", reason=reason[:1000])


def record_cancellation(fhir: FhirClient, task_id: str, reason: str) -> None:
    set_status(fhir, task_id, "cancelled", business="cancelled", reason=reason[:1000])


def _check_still_the_approved_study(study: Any, plan: WritebackPlan) -> None:
    """The ImagingStudy may have changed since approval; only harmless changes are written over."""
    problems = []
    if study.status not in ("registered", "available"):
        problems.append(f"its status is now {study.status}")
    if (study.subject.reference if study.subject else "") != plan.patient_reference:
        problems.append("its patient changed")
    if uid_of_study(study) != plan.study_instance_uid:
        problems.append("its Study Instance UID changed")
    if problems:
        raise StudyFailure(
            f"ImagingStudy/{plan.imaging_study_id} changed after the results were approved ({'; '.join(problems)}); "
            "nothing was reported in FHIR. Review the study record, then run the study again for a new approval."
        )


def _location_of(bundle: Any, resource_type: str) -> str:
    for entry in bundle.entry or []:
        location = entry.response.location if entry.response else None
        if location and f"{resource_type}/" in location:
            tail = location.split(f"{resource_type}/", 1)[1]
            return f"{resource_type}/{tail.split('/')[0]}"
    return resource_type
