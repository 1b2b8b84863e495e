"""AuditEvents for what the writer refused: the PACS holds other bytes than the ones approved.

A forged or damaged object under one of our (predictable) derived SOP Instance UIDs is a security
event, not a skipped write: it is recorded in the EHR with both hashes, for whoever investigates.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from fhir.resources.R4B.auditevent import (
    AuditEvent,
    AuditEventAgent,
    AuditEventEntity,
    AuditEventEntityDetail,
    AuditEventSource,
)
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.reference import Reference

from tools.fhir.builders import DICOM_CODE_SYSTEM, uid_identifier
from tools.fhir.client import FhirClient
from tools.workflow.approval import PendingDicomWrite

_AGENT = "imaging-agent"


def pacs_mismatch_event(
    study_instance_uid: str, write: PendingDicomWrite, pacs_sha256: str, when: str, recorded: datetime
) -> AuditEvent:
    """The AuditEvent of one mismatch; its id is derived from the object and the PACS hash, so a
    retry writes the same record again rather than a second one."""
    digest = hashlib.sha256(f"pacs-mismatch|{write.sop_instance_uid}|{pacs_sha256}".encode()).hexdigest()
    return AuditEvent(
        id=f"ia-{digest[:40]}",
        type=Coding(system=DICOM_CODE_SYSTEM, code="110113", display="Security Alert"),
        action="R",
        recorded=recorded,
        outcome="8",
        outcomeDesc=(
            f"{write.kind} {write.sop_instance_uid} in the PACS ({when}) is not the approved object: "
            f"approved sha256 {write.sha256}, PACS sha256 {pacs_sha256}"
        ),
        agent=[AuditEventAgent(who=Reference(display=_AGENT), requestor=False)],
        source=AuditEventSource(observer=Reference(display=_AGENT)),
        entity=[
            AuditEventEntity(
                what=Reference(identifier=uid_identifier(write.sop_instance_uid)),
                name=f"{write.kind} {write.sop_instance_uid}",
                detail=[
                    AuditEventEntityDetail(type="approved-sha256", valueString=write.sha256),
                    AuditEventEntityDetail(type="pacs-sha256", valueString=pacs_sha256),
                ],
            ),
            AuditEventEntity(what=Reference(identifier=uid_identifier(study_instance_uid)), name="study"),
        ],
    )


def record_pacs_mismatch(
    fhir: FhirClient, study_instance_uid: str, write: PendingDicomWrite, pacs_sha256: str, when: str
) -> str:
    """Write the mismatch's AuditEvent (PUT, update-as-create); returns its reference."""
    event = pacs_mismatch_event(study_instance_uid, write, pacs_sha256, when, datetime.now(UTC))
    written = fhir.update(event)
    return f"AuditEvent/{written.id}"
