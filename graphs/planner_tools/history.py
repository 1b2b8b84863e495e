"""The planner's history tools: what is stored for a study, what jobs ran, who approved, the priors.

Everything here reads what was recorded — the FHIR DiagnosticReport and Observations, the PACS
result series, the runtime's jobs and checkpoints, the audit index — and recomputes nothing, so
"show me the lung volumes of the last processed study" never segments again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir.resources.R4B.observation import Observation

from graphs.approval_worklist import worklist
from graphs.planner_tools.history_models import (
    ApprovalRecord,
    AuditChain,
    AuditEntry,
    JobDetail,
    JobItem,
    JobList,
    OutcomeItem,
    PriorComparison,
    PriorStudy,
    ResultSeries,
    StoredResults,
    StoredVolume,
    VolumeChange,
    WaitingItem,
)
from graphs.runtime import RunReport, WorkflowRuntime
from tools.fhir.builders import uid_search_token
from tools.fhir.worklist import WorklistItem, to_worklist_item
from tools.results.assessment import ASSESSMENT_SERIES_NUMBER
from tools.workflow.jobs import Job


class NothingStoredError(LookupError):
    """No study has stored results in this runtime's database; the message says what to do."""


def _outcomes(report: RunReport) -> list[OutcomeItem]:
    return [
        OutcomeItem(imaging_study_id=o["imaging_study_id"], outcome=o["outcome"], detail=o["detail"])
        for o in report.outcomes
    ]


def _volumes(observations: Sequence[Observation]) -> list[StoredVolume]:
    volumes = []
    for o in observations:
        if o.valueQuantity is None or o.valueQuantity.value is None or o.bodySite is None:
            continue
        coding = (o.bodySite.coding or [None])[0]
        volumes.append(
            StoredVolume(
                structure=(coding.display if coding and coding.display else o.bodySite.text) or "?",
                snomed_code=coding.code if coding else None,
                volume_ml=float(o.valueQuantity.value),
                observation_id=str(o.id),
            )
        )
    return sorted(volumes, key=lambda v: v.structure)


def _changes(current: Sequence[StoredVolume], prior: Sequence[StoredVolume]) -> list[VolumeChange]:
    before = {v.snomed_code or v.structure: v for v in prior}
    changes = []
    for now in current:
        then = before.get(now.snomed_code or now.structure)
        if then is None:
            continue
        change = round(now.volume_ml - then.volume_ml, 1)
        percent = round(100.0 * change / then.volume_ml, 1) if then.volume_ml else None
        changes.append(VolumeChange(
            structure=now.structure, prior_ml=then.volume_ml, current_ml=now.volume_ml, change_ml=change,
            change_percent=percent,
        ))
    return changes


class History:
    """The history reads, bound to one runtime (its clients, its database)."""

    def __init__(self, runtime: WorkflowRuntime) -> None:
        self.runtime = runtime
        self.fhir = runtime.workflow.services.fhir
        self.pacs = runtime.workflow.services.pacs
        self.lineage = runtime.workflow.services.lineage

    # -- studies ----------------------------------------------------------------------
    def _study(self, imaging_study_id: str | None) -> WorklistItem:
        if imaging_study_id:
            return to_worklist_item(self.fhir.read("ImagingStudy", imaging_study_id))
        for uid in self.lineage.latest_studies():
            found = self.fhir.search("ImagingStudy", {"identifier": uid_search_token(uid)})
            if found:
                return to_worklist_item(found[0])
        raise NothingStoredError(
            "no study has approved results stored through this runtime's database yet; name a study "
            "(search_imaging_studies with status 'available' lists the reported ones)"
        )

    def _observations(self, patient_reference: str | None) -> dict[str, list[Observation]]:
        """The patient's volume Observations, by the ImagingStudy they were derived from."""
        if not patient_reference:
            return {}
        by_study: dict[str, list[Observation]] = {}
        for o in self.fhir.search("Observation", {"subject": patient_reference}):
            for ref in o.derivedFrom or []:
                if ref.reference and ref.reference.startswith("ImagingStudy/"):
                    by_study.setdefault(ref.reference.removeprefix("ImagingStudy/"), []).append(o)
        return by_study

    def stored_results(self, imaging_study_id: str | None = None) -> StoredResults:
        study = self._study(imaging_study_id)
        reference = f"ImagingStudy/{study.imaging_study_id}"
        reports: list[Any] = []
        if study.patient_reference:
            reports = [
                r for r in self.fhir.search("DiagnosticReport", {"subject": study.patient_reference})
                if any(ref.reference == reference for ref in r.imagingStudy or [])
            ]
        report = reports[-1] if reports else None
        series: list[ResultSeries] = []
        approvals: list[ApprovalRecord] = []
        if study.study_instance_uid:
            series = [
                ResultSeries(modality=s.modality or "?", series_instance_uid=s.series_instance_uid,
                             instances=s.number_of_instances)
                for s in self.pacs.search_series(study.study_instance_uid)
                if s.modality != "CT" and s.series_number != ASSESSMENT_SERIES_NUMBER
            ]
            approvals = [
                ApprovalRecord(
                    kind=c.kind, sop_instance_uid=c.sop_instance_uid, approved_by=c.approved_by, automatic=c.automatic,
                    approved_at=c.approved_at.isoformat(), stored_at=c.stored_at.isoformat(),
                )
                for c in self.lineage.chains(study.study_instance_uid)
            ]
        return StoredResults(
            imaging_study_id=study.imaging_study_id,
            study_instance_uid=study.study_instance_uid,
            status=study.status,
            patient_reference=study.patient_reference,
            started=study.started,
            diagnostic_report_id=str(report.id) if report else None,
            report_status=str(report.status) if report else None,
            volumes=_volumes(self._observations(study.patient_reference).get(study.imaging_study_id, [])),
            result_series=sorted(series, key=lambda s: s.modality),
            approvals=approvals,
        )

    def audit_study(self, imaging_study_id: str) -> AuditChain:
        study = self._study(imaging_study_id)
        chains = self.lineage.chains(study.study_instance_uid) if study.study_instance_uid else []
        return AuditChain(
            imaging_study_id=study.imaging_study_id,
            study_instance_uid=study.study_instance_uid,
            entries=[
                AuditEntry(
                    kind=c.kind, sop_instance_uid=c.sop_instance_uid, sha256=c.sha256, approved_by=c.approved_by,
                    automatic=c.automatic, approved_at=c.approved_at.isoformat(), stored_at=c.stored_at.isoformat(),
                    destination=c.destination, source_instances=len(c.inputs),
                    source_series=sorted({i.series_instance_uid for i in c.inputs}),
                )
                for c in chains
            ],
        )

    def prior_studies(self, imaging_study_id: str) -> PriorComparison:
        study = self._study(imaging_study_id)
        volumes = self._observations(study.patient_reference)
        current = _volumes(volumes.get(study.imaging_study_id, []))
        others = []
        if study.patient_reference:
            others = [
                to_worklist_item(s) for s in self.fhir.search("ImagingStudy", {"subject": study.patient_reference})
                if str(s.id) != study.imaging_study_id
            ]
        # Earlier than this study by its start (ISO text sorts by time); one without a date cannot be placed.
        earlier = [o for o in others if o.started and study.started and o.started < study.started]
        priors = []
        for other in sorted(earlier, key=lambda o: o.started or "", reverse=True):
            stored = _volumes(volumes.get(other.imaging_study_id, []))
            priors.append(PriorStudy(
                imaging_study_id=other.imaging_study_id, started=other.started, status=other.status,
                volumes=stored, change_since=_changes(current, stored),
            ))
        return PriorComparison(
            imaging_study_id=study.imaging_study_id, patient_reference=study.patient_reference,
            started=study.started, current_volumes=current, priors=priors,
        )

    # -- jobs -------------------------------------------------------------------------
    def _job_item(self, job: Job, report: RunReport) -> JobItem:
        return JobItem(
            job_id=job.thread_id, kind=job.kind, label=job.label, status=job.status, created_at=job.created_at,
            outcomes=_outcomes(report), pending_approvals=len(report.pending),
        )

    def list_jobs(self, status: str = "all", limit: int = 20) -> JobList:
        items = []
        for job in reversed(self.runtime.jobs()):
            item = self._job_item(job, self.runtime.report(job.thread_id))
            keep = {
                "all": True,
                "unfinished": job.status not in ("done", "dispatched", "cancelled"),
                "failed": any(o.outcome == "failed" for o in item.outcomes),
                "waiting-approval": item.pending_approvals > 0,
                "done": job.status == "done",
            }[status]
            if keep:
                items.append(item)
            if len(items) >= limit:
                break
        return JobList(count=len(items), jobs=items)

    def _steps(self, job: Job) -> tuple[list[str], list[str]]:
        """The nodes the job's graph ran, oldest first, and those it runs next (from its checkpoints)."""
        graph = self.runtime.graphs[job.kind]
        history = list(graph.get_state_history({"configurable": {"thread_id": job.thread_id}}))
        if not history:
            return [], []
        ran = [node for snapshot in reversed(history[1:]) for node in snapshot.next if not node.startswith("__")]
        return ran, list(history[0].next)

    def show_job(self, job_id: str) -> JobDetail:
        job = self.runtime.job(job_id)
        report = self.runtime.report(job_id)
        steps, next_steps = self._steps(job)
        waiting = [
            WaitingItem(
                approval_id=e.approval.interrupt_id,
                imaging_study_id=e.approval.request.imaging_study_id,
                waits_for="a radiologist's decision (approval card, or imaging-agent approvals approve|reject)",
                claimed_by=e.claim.holder.id if e.claim else None,
                waiting_since=e.waiting_since.isoformat(),
            )
            for e in worklist(self.runtime)
            if e.approval.thread_id == job_id
        ]
        item = self._job_item(job, report)
        return JobDetail(
            job=item, steps=steps, next_steps=next_steps,
            failures=[o for o in item.outcomes if o.outcome == "failed"], waiting=waiting,
        )
