"""The FHIR Task that tracks one study's job: requested -> in-progress -> completed/failed/rejected.

Task is bookkeeping about the agent's own work, not a clinical result, so it is written as the
job moves (docs/architecture.md's approval rule covers the clinical writes). At approval the Task also
records the approved write plan: if the PACS write succeeds and the FHIR write fails, the next
run reads the plan back from here and finishes the FHIR part without asking again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.task import Task, TaskInput, TaskOutput

from tools.fhir.client import FhirClient
from tools.fhir.errors import FhirConflictError
from tools.fhir.search_values import condition, token

TASK_ID_SYSTEM = "urn:imaging-agent:task"
APPROVED_PLAN = "approved-writeback-plan"


def task_identifier(study_instance_uid: str, engine: str) -> Identifier:
    """The Task's business identifier: one Task per study and engine."""
    return Identifier(system=TASK_ID_SYSTEM, value=f"{study_instance_uid}/{engine}")


def task_token(study_instance_uid: str, engine: str) -> str:
    """The `identifier` search value of the study's Task, escaped so it matches that Task only."""
    return token(TASK_ID_SYSTEM, f"{study_instance_uid}/{engine}")


def ensure_task(fhir: FhirClient, imaging_study_id: str, study_instance_uid: str, patient_ref: str | None, engine: str) -> Task:
    """The job's Task (found, or created conditionally), moved to in-progress unless finished."""
    search = task_token(study_instance_uid, engine)
    found = fhir.search("Task", {"identifier": search})
    if found:
        task = found[0]
        if task.status in ("requested", "received", "accepted", "ready", "on-hold"):
            return set_status(fhir, str(task.id), "in-progress", business="started")
        return task
    task = Task(
        identifier=[task_identifier(study_instance_uid, engine)],
        status="in-progress",
        intent="order",
        code=CodeableConcept(text=f"AI contouring ({engine})"),
        description=f"Contour, review and report ImagingStudy/{imaging_study_id}",
        focus=Reference(reference=f"ImagingStudy/{imaging_study_id}"),
        for_fhir=Reference(reference=patient_ref) if patient_ref else None,
        businessStatus=CodeableConcept(text="started"),
        # authoredOn doubles as the creation time of the job's DICOM objects, so a rerun of the
        # same study rebuilds byte-identical files (same hashes) rather than near-copies.
        authoredOn=datetime.now(UTC).replace(microsecond=0),
    )
    return fhir.create(task, if_none_exist=condition("identifier", search))


def set_status(
    fhir: FhirClient,
    task_id: str,
    status: str,
    *,
    business: str | None = None,
    reason: str | None = None,
    reason_coding: Coding | None = None,
    outputs: Sequence[str] = (),
    plan_json: str | None = None,
    note: str | None = None,
) -> Task:
    """Read, change and update with If-Match; one retry when someone else changed it meanwhile."""
    for attempt in range(2):
        task = fhir.read("Task", task_id)
        task.status = status
        if business is not None:
            task.businessStatus = CodeableConcept(text=business)
        task.statusReason = (
            CodeableConcept(coding=[reason_coding] if reason_coding else None, text=reason)
            if reason or reason_coding
            else None
        )
        if outputs:
            task.output = [
                TaskOutput(type=CodeableConcept(text="result"), valueReference=Reference(reference=ref)) for ref in outputs
            ]
        if plan_json is not None:
            task.input = [TaskInput(type=CodeableConcept(text=APPROVED_PLAN), valueString=plan_json)]
        if note:
            task.note = [*(task.note or []), Annotation(text=note)]
        try:
            return fhir.update(task, if_match=task.meta.versionId if task.meta else None)
        except FhirConflictError:
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


def approved_plan(task: Task) -> dict | None:
    """The write plan recorded at approval, if this Task holds one."""
    for item in task.input or []:
        if item.type and item.type.text == APPROVED_PLAN and item.valueString:
            return json.loads(item.valueString)
    return None
