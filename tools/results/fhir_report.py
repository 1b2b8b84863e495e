"""FHIR R4 resources that report an approved result, and the one transaction that writes them.

The transaction is safe to send twice (docs/architecture.md, idempotent writes):
- DiagnosticReport, Observations, Device and Practitioner are conditional creates on their
  identifiers (``ifNoneExist``), so a second send finds them;
- Provenance and AuditEvent have no identifier element in R4, so they get ids derived from the
  result and are written with PUT (update-as-create), which is idempotent by definition;
- the ImagingStudy is updated with ``ifMatch`` on the version that was read.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import datetime

from fhir.resources.R4B.attachment import Attachment
from fhir.resources.R4B.auditevent import AuditEvent, AuditEventAgent, AuditEventEntity, AuditEventSource
from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntryRequest
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.device import Device, DeviceDeviceName, DeviceVersion
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.imagingstudy import ImagingStudy, ImagingStudySeries, ImagingStudySeriesInstance
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.provenance import Provenance, ProvenanceAgent, ProvenanceEntity
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from pydantic import BaseModel, Field

from tools.fhir.builders import DICOM_CODE_SYSTEM, DICOM_UID_SYSTEM, URI_SYSTEM, uid_identifier
from tools.fhir.search_values import condition, token
from tools.reporting.models import DraftReport
from tools.results.common import DerivedObject
from tools.segmentation.base import ResultEdit

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_ID_SYSTEM = "urn:imaging-agent:observation"
DEVICE_ID_SYSTEM = "urn:imaging-agent:device"
PROVENANCE_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

# The overlay images are Secondary Capture with Modality OT (highdicom's SCImage): not a CT to read.
_MODALITY_OF_KIND = {"RTSTRUCT": "RTSTRUCT", "SEG": "SEG", "SR": "SR", "SC": "OT", "KO": "KO"}


class StructureVolume(BaseModel):
    """One measured structure as the report states it."""

    key: str
    display: str
    snomed_code: str
    volume_ml: float
    area_mm2: float | None = None
    """a radiograph's structure: its projected area (then reported instead of the volume)"""

    def size_text(self) -> str:
        return f"area {self.area_mm2 / 100:.1f} cm2 (projected)" if self.area_mm2 is not None else f"volume {self.volume_ml:.1f} mL"


class Reviewer(BaseModel):
    """The person who approved or rejected: recorded in Provenance, AuditEvent and Task.

    `reviewed` is False for an automatic approval (`--yes`): that person started the job but
    did not look at the results, and the resources must not say otherwise.
    """

    id: str
    name: str
    system: str = Field(description="the issuer that authenticated the reviewer: their identifier system")
    reviewed: bool = True


class FhirChange(BaseModel):
    """One pending FHIR change as the approver sees it."""

    method: str
    resource_type: str
    target: str
    summary: str


class WritebackPlan(BaseModel):
    """The inputs of the write-back transaction, fixed at approval time."""

    result_uid: str
    imaging_study_id: str
    imaging_study_version: str | None
    study_instance_uid: str
    patient_reference: str
    engine: str
    engine_version: str
    engine_fallbacks: list[str] = []
    structures: list[StructureVolume]
    objects: list[DerivedObject]
    conclusion: str
    report_text: str
    edit: ResultEdit | None = None
    """a reviewer's correction: its author and the AI result it derives from go into Provenance"""
    modality: str = "CT"
    """of the segmented series: CR and DX reports are of a chest radiograph"""
    draft: DraftReport | None = None
    """AI-drafted findings (a report model's): written as a DiagnosticReport of their own"""
    engine_endpoint: str | None = None
    """the host of the engine's remote endpoint (MedImageParse), named in the Provenance; None: a local engine"""
    draft_sr_uid: str | None = None
    """the SOP Instance UID of the draft's SR: the draft DiagnosticReport's identifier"""


def _stable_id(*parts: str) -> str:
    return "ia-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


def _urn(name: str, plan: WritebackPlan) -> str:
    digest = hashlib.sha256(f"{plan.result_uid}|{name}".encode()).hexdigest()
    return f"urn:uuid:{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def device_identifier(engine: str, engine_version: str) -> Identifier:
    return Identifier(system=DEVICE_ID_SYSTEM, value=f"{engine}@{engine_version}")


def build_device(engine: str, engine_version: str) -> Device:
    return Device(
        identifier=[device_identifier(engine, engine_version)],
        deviceName=[DeviceDeviceName(name=f"imaging-agent {engine}", type="model-name")],
        version=[DeviceVersion(value=engine_version)],
        manufacturer="imaging-agent",
    )


def build_practitioner(reviewer: Reviewer) -> Practitioner:
    return Practitioner(
        identifier=[Identifier(system=reviewer.system, value=reviewer.id)],
        name=[{"text": reviewer.name}],
    )


def observation_identifier(plan: WritebackPlan, structure: StructureVolume) -> str:
    """The Observation's identifier value: what its conditional create matches on."""
    kind = "area" if structure.area_mm2 is not None else "volume"
    return f"{plan.result_uid}/{structure.key}/{kind}"


def build_observation(plan: WritebackPlan, structure: StructureVolume, device_ref: str) -> Observation:
    if structure.area_mm2 is not None:  # a radiograph: the structure's projected area
        code, display = "42798000", "Area"
        value = Quantity(value=round(structure.area_mm2, 1), unit="mm2", system=UCUM, code="mm2")
    else:
        code, display = "118565006", "Volume"
        value = Quantity(value=round(structure.volume_ml, 1), unit="mL", system=UCUM, code="mL")
    return Observation(
        identifier=[Identifier(system=OBSERVATION_ID_SYSTEM, value=observation_identifier(plan, structure))],
        status="final",
        category=[
            CodeableConcept(
                coding=[Coding(system="http://terminology.hl7.org/CodeSystem/observation-category", code="imaging")]
            )
        ],
        code=CodeableConcept(coding=[Coding(system=SNOMED, code=code, display=display)], text=display),
        subject=Reference(reference=plan.patient_reference),
        bodySite=CodeableConcept(
            coding=[Coding(system=SNOMED, code=structure.snomed_code, display=structure.display)],
            text=structure.display,
        ),
        valueQuantity=value,
        method=CodeableConcept(text=f"automatic segmentation, {plan.engine} {plan.engine_version}"),
        device=Reference(reference=device_ref),
        derivedFrom=[Reference(reference=f"ImagingStudy/{plan.imaging_study_id}")],
    )


def build_draft_report(
    plan: WritebackPlan, draft: DraftReport, reviewer: Reviewer, reviewer_ref: str | None, device_ref: str, issued: datetime
) -> DiagnosticReport:
    """The AI-drafted findings as a report of their own: final once approved, saying who drafted and who approved."""
    approved = f"approved by {reviewer.name}" if reviewer.reviewed else "approved automatically, not reviewed by a human"
    lines = [f"{n}. {f.text}" for n, f in enumerate(draft.findings, start=1)]
    text = "\n".join([
        f"AI-DRAFTED FINDINGS ({draft.model} {draft.model_version}, endpoint {draft.endpoint}); {approved}.",
        f"Technique: {draft.context.technique}",
        "",
        *lines,
    ]) + "\n"
    return DiagnosticReport(
        identifier=[uid_identifier(plan.draft_sr_uid or "")],
        status="final",
        category=[
            CodeableConcept(
                coding=[Coding(system="http://terminology.hl7.org/CodeSystem/v2-0074", code="RAD", display="Radiology")]
            )
        ],
        code=CodeableConcept(
            coding=[Coding(system=LOINC, code="18748-4", display="Diagnostic imaging study")],
            text="AI-drafted chest radiograph findings",
        ),
        subject=Reference(reference=plan.patient_reference),
        issued=issued,
        performer=[Reference(reference=device_ref)],
        resultsInterpreter=[Reference(reference=reviewer_ref)] if reviewer_ref else None,
        imagingStudy=[Reference(reference=f"ImagingStudy/{plan.imaging_study_id}")],
        conclusion=f"AI-drafted by {draft.model}, {approved}: " + " ".join(f.text for f in draft.findings),
        presentedForm=[
            Attachment(
                contentType="text/plain; charset=utf-8",
                language="en",
                data=base64.b64encode(text.encode()).decode(),
                title="AI-drafted findings",
            )
        ],
    )


def build_diagnostic_report(
    plan: WritebackPlan,
    observation_refs: Sequence[str],
    reviewer_ref: str | None,
    device_ref: str,
    issued: datetime,
) -> DiagnosticReport:
    """`reviewer_ref` is None when nobody reviewed the result: then no results interpreter is named."""
    return DiagnosticReport(
        identifier=[uid_identifier(plan.result_uid)],
        status="final",
        category=[
            CodeableConcept(
                coding=[Coding(system="http://terminology.hl7.org/CodeSystem/v2-0074", code="RAD", display="Radiology")]
            )
        ],
        code=CodeableConcept(
            coding=[Coding(system=LOINC, code="18748-4", display="Diagnostic imaging study")],
            text="AI chest radiograph segmentation result" if plan.modality in ("CR", "DX") else "AI lung contouring result",
        ),
        subject=Reference(reference=plan.patient_reference),
        issued=issued,
        performer=[Reference(reference=device_ref)],
        resultsInterpreter=[Reference(reference=reviewer_ref)] if reviewer_ref else None,
        imagingStudy=[Reference(reference=f"ImagingStudy/{plan.imaging_study_id}")],
        result=[Reference(reference=ref) for ref in observation_refs],
        conclusion=plan.conclusion,
        presentedForm=[
            Attachment(
                contentType="text/plain; charset=utf-8",
                language="en",
                data=base64.b64encode(plan.report_text.encode()).decode(),
                title="AI contouring report",
            )
        ],
    )


def updated_imaging_study(study: ImagingStudy, objects: Sequence[DerivedObject]) -> ImagingStudy:
    """The study marked `available`, with the new result series listed (no duplicates)."""
    updated = study.model_copy(deep=True)
    updated.status = "available"
    series = list(updated.series or [])
    known = {s.uid for s in series}
    by_series: dict[str, list[DerivedObject]] = {}
    for obj in objects:
        by_series.setdefault(obj.series_instance_uid, []).append(obj)
    for series_uid, members in by_series.items():
        if series_uid in known:
            continue
        series.append(
            ImagingStudySeries(
                uid=series_uid,
                modality=Coding(system=DICOM_CODE_SYSTEM, code=_MODALITY_OF_KIND[members[0].kind]),
                numberOfInstances=len(members),
                description=f"AI {members[0].kind}",
                instance=[
                    ImagingStudySeriesInstance(
                        uid=m.sop_instance_uid, sopClass=Coding(system=URI_SYSTEM, code=f"urn:oid:{m.sop_class_uid}")
                    )
                    for m in members
                ],
            )
        )
    updated.series = series
    updated.numberOfSeries = len(series)
    updated.numberOfInstances = sum(s.numberOfInstances or 0 for s in series)
    return updated


def build_provenance(
    plan: WritebackPlan,
    target_refs: Sequence[str],
    device_ref: str,
    reviewer_ref: str,
    recorded: datetime,
    *,
    reviewed: bool = True,
    reviewer: Reviewer | None = None,
    drafter_ref: str | None = None,
) -> Provenance:
    """The software is the assembler; the person is the verifier, or, for an automatic
    approval, only the enterer who started the job, with a reason saying nobody reviewed it.

    With `reviewer`, the agent also names the authenticated principal itself (identifier with
    the issuer as system, and display name), so the record stands without resolving the reference.

    A corrected result (`plan.edit`) adds its corrector as author and the AI's own result, by its
    UID, as what it was derived from."""
    edit = plan.edit
    corrections = (
        [
            ProvenanceAgent(
                type=CodeableConcept(coding=[Coding(system=PROVENANCE_PARTICIPANT, code="author")]),
                who=Reference(
                    identifier=Identifier(system=edit.editor_issuer, value=edit.editor_id), display=edit.editor_name
                ),
            )
        ]
        if edit
        else []
    )
    return Provenance(
        id=_stable_id("provenance", plan.result_uid),
        target=[Reference(reference=ref) for ref in target_refs],
        recorded=recorded,
        activity=CodeableConcept(
            coding=[Coding(system="http://terminology.hl7.org/CodeSystem/v3-DataOperation", code="CREATE")]
        ),
        agent=[
            ProvenanceAgent(
                type=CodeableConcept(coding=[Coding(system=PROVENANCE_PARTICIPANT, code="assembler")]),
                who=Reference(
                    reference=device_ref,
                    display=f"{plan.engine} {plan.engine_version}"
                    + (f" at {plan.engine_endpoint}" if plan.engine_endpoint else ""),
                ),
            ),
            ProvenanceAgent(
                type=CodeableConcept(
                    coding=[Coding(system=PROVENANCE_PARTICIPANT, code="verifier" if reviewed else "enterer")]
                ),
                who=Reference(
                    reference=reviewer_ref,
                    identifier=Identifier(system=reviewer.system, value=reviewer.id) if reviewer else None,
                    display=reviewer.name if reviewer else None,
                ),
            ),
            *corrections,
            *(
                [
                    ProvenanceAgent(
                        type=CodeableConcept(coding=[Coding(system=PROVENANCE_PARTICIPANT, code="author")]),
                        who=Reference(
                            reference=drafter_ref,
                            display=f"{plan.draft.model} {plan.draft.model_version} at {plan.draft.endpoint}",
                        ),
                    )
                ]
                if drafter_ref and plan.draft
                else []
            ),
        ],
        reason=[
            CodeableConcept(text=text)
            for text in [
                *([] if reviewed else ["Automatic approval (--yes): no human reviewed these results before release."]),
                *[f"Engine not used: {why}" for why in plan.engine_fallbacks],
                *(
                    [f"Contours corrected by {edit.editor_name} ({edit.edit_count} edits) before approval."]
                    if edit
                    else []
                ),
            ]
        ]
        or None,
        entity=[
            ProvenanceEntity(role="source", what=Reference(reference=f"ImagingStudy/{plan.imaging_study_id}"))
        ]
        + [
            ProvenanceEntity(
                role="derivation",
                what=Reference(
                    identifier=Identifier(system=DICOM_UID_SYSTEM, value=f"urn:oid:{obj.sop_instance_uid}"),
                    display=f"DICOM {obj.kind}",
                ),
            )
            for obj in plan.objects
        ]
        + (
            [
                ProvenanceEntity(
                    role="derivation",
                    what=Reference(
                        identifier=Identifier(system=DICOM_UID_SYSTEM, value=f"urn:oid:{edit.derived_from_result_uid}"),
                        display="AI result before the reviewer's corrections",
                    ),
                )
            ]
            if edit
            else []
        ),
    )


def build_audit_event(
    plan: WritebackPlan, target_refs: Sequence[str], device_ref: str, reviewer_ref: str, recorded: datetime
) -> AuditEvent:
    return AuditEvent(
        id=_stable_id("audit", plan.result_uid),
        type=Coding(system=DICOM_CODE_SYSTEM, code="110106", display="Export"),
        subtype=[Coding(system="http://hl7.org/fhir/restful-interaction", code="transaction")],
        action="C",
        recorded=recorded,
        outcome="0",
        agent=[
            AuditEventAgent(who=Reference(reference=reviewer_ref), requestor=True),
            AuditEventAgent(who=Reference(reference=device_ref), requestor=False),
        ],
        source=AuditEventSource(observer=Reference(reference=device_ref, display="imaging-agent")),
        entity=[AuditEventEntity(what=Reference(reference=ref)) for ref in target_refs],
    )


def _entry(resource: Resource, full_url: str, method: str, url: str, **request: str) -> BundleEntry:
    return BundleEntry(
        fullUrl=full_url, resource=resource, request=BundleEntryRequest(method=method, url=url, **request)
    )


def build_writeback_transaction(
    plan: WritebackPlan, study: ImagingStudy, reviewer: Reviewer, when: datetime
) -> Bundle:
    """One transaction with every FHIR write of an approved result (see the module docstring)."""
    device_urn, reviewer_urn, report_urn = _urn("device", plan), _urn("reviewer", plan), _urn("report", plan)
    device = build_device(plan.engine, plan.engine_version)
    # Each conditional create matches on exactly its own identifier: values are escaped
    # (tools/fhir/search_values.py), so a reviewer id like "x,<system>|123" cannot match another record.
    device_token = token(DEVICE_ID_SYSTEM, f"{plan.engine}@{plan.engine_version}")
    entries = [
        _entry(device, device_urn, "POST", "Device", ifNoneExist=condition("identifier", device_token)),
        _entry(
            build_practitioner(reviewer),
            reviewer_urn,
            "POST",
            "Practitioner",
            ifNoneExist=condition("identifier", token(reviewer.system, reviewer.id)),
        ),
    ]
    observation_urns = []
    for structure in plan.structures:
        urn = _urn(f"observation/{structure.key}", plan)
        observation_urns.append(urn)
        entries.append(
            _entry(
                build_observation(plan, structure, device_urn),
                urn,
                "POST",
                "Observation",
                ifNoneExist=condition("identifier", token(OBSERVATION_ID_SYSTEM, observation_identifier(plan, structure))),
            )
        )
    review = (
        f" Reviewed and approved by {reviewer.name}."
        if reviewer.reviewed
        else " Approved automatically: not reviewed by a human."
    )
    reported = plan.model_copy(update={"conclusion": plan.conclusion + review})
    entries.append(
        _entry(
            build_diagnostic_report(
                reported, observation_urns, reviewer_urn if reviewer.reviewed else None, device_urn, when
            ),
            report_urn,
            "POST",
            "DiagnosticReport",
            ifNoneExist=condition("identifier", token(DICOM_UID_SYSTEM, f"urn:oid:{plan.result_uid}")),
        )
    )
    draft_urns: list[str] = []
    drafter_urn = None
    if plan.draft is not None and plan.draft_sr_uid:
        drafter_urn, draft_urn = _urn("drafter", plan), _urn("draft-report", plan)
        draft_urns.append(draft_urn)
        drafter_token = token(DEVICE_ID_SYSTEM, f"{plan.draft.model}@{plan.draft.model_version}")
        entries.append(
            _entry(
                build_device(plan.draft.model, plan.draft.model_version), drafter_urn, "POST", "Device",
                ifNoneExist=condition("identifier", drafter_token),
            )
        )
        entries.append(
            _entry(
                build_draft_report(
                    plan, plan.draft, reviewer, reviewer_urn if reviewer.reviewed else None, drafter_urn, when
                ),
                draft_urn,
                "POST",
                "DiagnosticReport",
                ifNoneExist=condition("identifier", token(DICOM_UID_SYSTEM, f"urn:oid:{plan.draft_sr_uid}")),
            )
        )
    study_request = {"ifMatch": f'W/"{plan.imaging_study_version}"'} if plan.imaging_study_version else {}
    entries.append(
        _entry(
            updated_imaging_study(study, plan.objects),
            f"ImagingStudy/{plan.imaging_study_id}",
            "PUT",
            f"ImagingStudy/{plan.imaging_study_id}",
            **study_request,
        )
    )
    targets = [report_urn, *draft_urns, *observation_urns, f"ImagingStudy/{plan.imaging_study_id}"]
    provenance = build_provenance(
        plan, targets, device_urn, reviewer_urn, when, reviewed=reviewer.reviewed, reviewer=reviewer,
        drafter_ref=drafter_urn
    )
    audit = build_audit_event(plan, targets, device_urn, reviewer_urn, when)
    entries.append(_entry(provenance, f"Provenance/{provenance.id}", "PUT", f"Provenance/{provenance.id}"))
    entries.append(_entry(audit, f"AuditEvent/{audit.id}", "PUT", f"AuditEvent/{audit.id}"))
    return Bundle(type="transaction", entry=entries)


def describe_changes(plan: WritebackPlan) -> list[FhirChange]:
    """The FHIR half of the approval payload: every resource the transaction will write."""
    changes = [
        FhirChange(
            method="PUT",
            resource_type="ImagingStudy",
            target=f"ImagingStudy/{plan.imaging_study_id}",
            summary=(
                f"status registered -> available; add {len({o.series_instance_uid for o in plan.objects})} "
                f"result series (If-Match version {plan.imaging_study_version})"
            ),
        ),
        FhirChange(
            method="POST",
            resource_type="DiagnosticReport",
            target=f"new (identifier urn:oid:{plan.result_uid})",
            summary=f"final report: {plan.conclusion}",
        ),
    ]
    changes += [
        FhirChange(
            method="POST",
            resource_type="Observation",
            target=f"new ({s.key})",
            summary=f"{s.display} {s.size_text()}",
        )
        for s in plan.structures
    ]
    changes += [
        FhirChange(method="POST", resource_type="Device", target="conditional", summary=f"{plan.engine} {plan.engine_version}"),
        *(
            [
                FhirChange(
                    method="POST", resource_type="DiagnosticReport", target=f"new (identifier urn:oid:{plan.draft_sr_uid})",
                    summary=f"AI-drafted findings ({plan.draft.model}), final once approved: {len(plan.draft.findings)} finding(s)",
                ),
                FhirChange(method="POST", resource_type="Device", target="conditional",
                           summary=f"{plan.draft.model} {plan.draft.model_version} at {plan.draft.endpoint}"),
            ]
            if plan.draft is not None
            else []
        ),
        FhirChange(method="POST", resource_type="Practitioner", target="conditional", summary="the approving reviewer"),
        FhirChange(method="PUT", resource_type="Provenance", target="new", summary="software and reviewer as agents"),
        FhirChange(method="PUT", resource_type="AuditEvent", target="new", summary="record of this write"),
    ]
    return changes
