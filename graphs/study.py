"""The study pipeline: one ImagingStudy from FHIR work list entry to approved, written results.

    start -> fetch -> assemble -> preflight -> segment -> build -> approval -> write_pacs
          -> write_fhir -> END
    (any stage failing -> record_failure -> END; a rejection -> record_rejection -> END;
     a Task holding an approved plan whose objects are already in the PACS -> write_fhir)

State is a typed dict of identifiers, paths and hashes; arrays live in the work directory
(`run_dir/work/<content key>/`). Each node is one step with a clear input and output, and
reports progress on LangGraph's custom stream. The only path to `write_pacs` and
`write_fhir` runs through `approval`, whose single `interrupt()` carries every pending write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict

from langgraph.config import get_config, get_stream_writer
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.types import Checkpointer, interrupt
from pydicom import dcmread

from agent.parts import fhir_client, pacs_client
from agent.settings import Settings
from tools.fhir.errors import FhirConflictError
from tools.fhir.task import approved_plan, ensure_task, set_status
from tools.fhir.worklist import study_instance_uid as uid_of_study
from tools.http.retry import ServiceUnavailableError
from tools.imaging.preflight import preflight
from tools.imaging.series_choice import choose_ct_series
from tools.imaging.volume import assemble_volume, read_series_dir
from tools.imaging.volume_store import content_key, load_volume, save_volume
from tools.results.fhir_report import StructureVolume, WritebackPlan, build_writeback_transaction, describe_changes
from tools.results.package import build_package
from tools.segmentation import registry  # noqa: F401  (registers the built-in engines)
from tools.segmentation.base import STRUCTURES, EngineError, get_engine
from tools.segmentation.qa import qa_flags
from tools.segmentation.result_store import load_result, save_result
from tools.workflow.approval import (
    SOP_CLASS_NAMES,
    ApprovalDecision,
    ApprovalRequest,
    PendingDicomWrite,
    SeriesChoice,
    StructureForReview,
)
from tools.workflow.decisions import DecisionStore, payload_sha256

log = logging.getLogger(__name__)

Outcome = Literal["completed", "failed", "rejected"]


class StudyState(TypedDict, total=False):
    """What the study pipeline knows; identifiers, paths and hashes only."""

    imaging_study_id: str
    engine: str
    targets: list[str]
    variant: str
    """Prefix of the work files: "approval" in the pipeline, "draft" for the chat's look-only tools,
    so a draft never overwrites a file whose hash a pending approval holds."""
    study: dict[str, Any]
    task_id: str
    repair_plan: dict[str, Any]
    series: dict[str, Any]
    work_dir: str
    volume_file: str
    volume_sha256: str
    segmentation_file: str
    segmentation_sha256: str
    engine_fallbacks: list[str]
    """Engines tried before the one that produced the result, each with why it was not used."""
    created_at: str
    approval_request: dict[str, Any]
    decision: dict[str, Any]
    stored: list[str]
    report_reference: str
    outcome: Outcome
    error: str
    failed_stage: str
    seconds: dict[str, float]


class StudyFailure(RuntimeError):
    """A study cannot go on; the message is for the radiologist and names what to do."""


def _progress(study_id: str, stage: str, percent: float, **extra: Any) -> None:
    get_stream_writer()({"imaging_study_id": study_id, "stage": stage, "percent": percent, **extra})


Node = Callable[[StudyState], dict[str, Any]]


def _step(stage: str, percent: float) -> Callable[[Node], Node]:
    """Progress + timing + failure capture around a node; interrupts pass through untouched."""

    def wrap(fn: Node) -> Node:
        def node(state: StudyState) -> dict[str, Any]:
            study_id = state["imaging_study_id"]
            _progress(study_id, stage, percent)
            started = time.perf_counter()
            try:
                update = fn(state)
            except GraphBubbleUp:
                raise
            except Exception as exc:  # one study's failure must not stop a batch
                log.warning("study %s failed at %s: %s", study_id, stage, exc)
                return {"error": str(exc), "failed_stage": stage}
            seconds = {**state.get("seconds", {}), stage: round(time.perf_counter() - started, 3)}
            return {**update, "seconds": seconds}

        node.__name__ = fn.__name__
        return node

    return wrap


class StudyPipeline:
    """The nodes, bound to settings (clients are made per call: nodes may run in threads)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.decisions = DecisionStore.for_settings(settings)

    # -- helpers -----------------------------------------------------------------------
    def _work_dir(self, key: str) -> Path:
        return self.settings.run_dir / "work" / key

    # -- nodes -------------------------------------------------------------------------
    def read_study(self, state: StudyState) -> dict[str, Any]:
        """The ImagingStudy and its patient from FHIR: identifiers, dates, version. Reads only."""
        with fhir_client(self.settings) as fhir:
            study = fhir.read("ImagingStudy", state["imaging_study_id"])
            study_uid = uid_of_study(study)
            if study_uid is None:
                raise StudyFailure(
                    f"ImagingStudy/{study.id} has no Study Instance UID identifier (system urn:dicom:uid), "
                    "so its images cannot be found in the PACS. Add the identifier and run again."
                )
            patient_ref = study.subject.reference if study.subject else None
            patient_name, patient_id = None, None
            if patient_ref and patient_ref.startswith("Patient/"):
                patient = fhir.read("Patient", patient_ref.split("/", 1)[1])
                patient_name = patient.name[0].text if patient.name else None
                patient_id = patient.identifier[0].value if patient.identifier else None
        return {
            "engine": state.get("engine") or self.settings.default_engine,
            "targets": state.get("targets") or ["lungs"],
            "study": {
                "study_instance_uid": study_uid,
                "status": study.status,
                "version": study.meta.versionId if study.meta else None,
                "patient_reference": patient_ref,
                "patient_display_name": patient_name,
                "patient_id": patient_id,
                "started": str(study.started) if study.started else None,
                "description": study.description,
            },
        }

    def start(self, state: StudyState) -> dict[str, Any]:
        update = self.read_study(state)
        info = update["study"]
        with fhir_client(self.settings) as fhir:
            task = ensure_task(
                fhir, state["imaging_study_id"], info["study_instance_uid"], info["patient_reference"], update["engine"]
            )
        update |= {"task_id": str(task.id), "created_at": _created_at(task.authoredOn)}
        recorded = approved_plan(task)
        if recorded is not None and info["status"] == "registered" and self._repairable(state, info, recorded):
            update["repair_plan"] = recorded
        return update

    def _repairable(self, state: StudyState, info: dict[str, Any], recorded: dict[str, Any]) -> bool:
        """Reuse a write plan read back from the Task only when it is provably ours and still valid.

        The Task lives in the EHR, where others can write: the plan must name this very study and
        patient, its approval must be in the local decisions table, and every approved object must
        already be in the PACS. Otherwise the study simply runs again and asks for a new approval.
        """
        try:
            plan = WritebackPlan.model_validate(recorded["plan"])
            decision = ApprovalDecision.model_validate(recorded["decision"])
        except (KeyError, ValueError):
            log.warning("study %s: unreadable plan in its Task; running it again", state["imaging_study_id"])
            return False
        same_study = (
            plan.imaging_study_id == state["imaging_study_id"]
            and plan.study_instance_uid == info["study_instance_uid"]
            and plan.patient_reference == (info["patient_reference"] or "")
        )
        approved_here = self.decisions.plan_approved(plan.result_uid, recorded)
        if not (same_study and approved_here and decision.action == "approve"):
            log.warning("study %s: the Task's plan is not one approved here; running it again", state["imaging_study_id"])
            return False
        with pacs_client(self.settings) as pacs:
            stored = all(
                pacs.instance_exists(plan.study_instance_uid, o.series_instance_uid, o.sop_instance_uid)
                for o in plan.objects
            )
        if not stored:
            log.warning("study %s: approved objects missing from the PACS; running it again", state["imaging_study_id"])
        return stored

    def fetch(self, state: StudyState) -> dict[str, Any]:
        study_uid = state["study"]["study_instance_uid"]
        with pacs_client(self.settings) as pacs:
            chosen = choose_ct_series(study_uid, pacs.search_series(study_uid))
            instances = pacs.search_instances(study_uid, chosen.series_instance_uid)
            work = self._work_dir(content_key(chosen.series_instance_uid, [i.sop_instance_uid for i in instances]))
            source = work / "source"
            have = {p.stem for p in source.glob("*.dcm")}
            if have != {i.sop_instance_uid for i in instances}:
                source.mkdir(parents=True, exist_ok=True)
                for ds in pacs.retrieve_series(study_uid, chosen.series_instance_uid):
                    ds.save_as(source / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        return {"series": chosen.model_dump(), "work_dir": str(work)}

    def assemble(self, state: StudyState) -> dict[str, Any]:
        work = Path(state["work_dir"])
        volume = assemble_volume(read_series_dir(work / "source"))
        digest = save_volume(volume, work / "volume.npz")
        return {"volume_file": str(work / "volume.npz"), "volume_sha256": digest}

    def preflight(self, state: StudyState) -> dict[str, Any]:
        preflight(load_volume(Path(state["volume_file"]), state["volume_sha256"]))
        return {}

    def segment(self, state: StudyState) -> dict[str, Any]:
        """Run the requested engine; when it fails or its QA fails, the configured fallbacks in turn."""
        volume = load_volume(Path(state["volume_file"]), state["volume_sha256"])
        chain = [state["engine"], *[e for e in self.settings.fallback_engines if e != state["engine"]]]
        not_used: list[str] = []
        for name in chain:
            try:
                result = get_engine(name, self.settings).segment(volume, state["targets"])
            except (EngineError, ServiceUnavailableError, ValueError) as exc:
                not_used.append(f"{name}: {exc}")
                continue
            failed = [f.message for f in [*result.flags, *qa_flags(volume, result.structures)] if f.severity == "fail"]
            if failed and name != chain[-1]:
                not_used.append(f"{name}: QA failed ({'; '.join(failed)})")
                continue
            path = Path(state["work_dir"]) / f"{state.get('variant', 'approval')}-segmentation-{name}.npz"
            return {
                "segmentation_file": str(path),
                "segmentation_sha256": save_result(result, path),
                "engine_fallbacks": not_used,
            }
        raise StudyFailure(
            f"no segmentation engine produced a result for series {volume.series_instance_uid}: "
            + " | ".join(not_used)
            + ". Check the engines' configuration (imaging-agent --help, .env.example)."
        )

    def build(self, state: StudyState) -> dict[str, Any]:
        work = Path(state["work_dir"])
        volume = load_volume(Path(state["volume_file"]), state["volume_sha256"])
        result = load_result(Path(state["segmentation_file"]), state["segmentation_sha256"])
        source = [dcmread(p, stop_before_pixels=True) for p in sorted((work / "source").glob("*.dcm"))]
        created = datetime.fromisoformat(state["created_at"])
        out_dir = work / f"{state.get('variant', 'approval')}-results-{result.engine}"
        package = build_package(source, volume, result, out_dir, created=created)
        study = state["study"]
        plan = WritebackPlan(
            result_uid=package.result_uid,
            imaging_study_id=state["imaging_study_id"],
            imaging_study_version=study["version"],
            study_instance_uid=study["study_instance_uid"],
            patient_reference=study["patient_reference"] or "",
            engine=package.engine,
            engine_version=package.engine_version,
            engine_fallbacks=state.get("engine_fallbacks", []),
            structures=[
                StructureVolume(
                    key=s.key, display=s.display, snomed_code=_snomed(s.key), volume_ml=s.measurements.volume_ml
                )
                for s in package.structures
            ],
            objects=package.objects,
            conclusion=package.conclusion,
            report_text=package.report_path.read_text(),
        )
        request = ApprovalRequest(
            request_id=package.result_uid,
            imaging_study_id=state["imaging_study_id"],
            study_instance_uid=study["study_instance_uid"],
            patient_id=study["patient_id"],
            patient_display_name=study["patient_display_name"],
            study_date=study["started"],
            study_description=study["description"],
            series=SeriesChoice(**state["series"]),
            engine=package.engine,
            engine_version=package.engine_version,
            engine_fallbacks=state.get("engine_fallbacks", []),
            structures=[
                StructureForReview(
                    key=s.key,
                    display=s.display,
                    volume_ml=round(s.measurements.volume_ml, 1),
                    mean_hu=round(s.measurements.mean_hu or 0.0, 1),
                    n_components=s.measurements.n_components,
                    confidence=s.confidence,
                )
                for s in package.structures
            ],
            flags=package.flags,
            previews=[str(p) for p in package.previews],
            report_text=plan.report_text,
            dicom_writes=[
                PendingDicomWrite(
                    kind=o.kind,
                    sop_class_uid=o.sop_class_uid,
                    sop_class_name=SOP_CLASS_NAMES.get(o.sop_class_uid, o.sop_class_uid),
                    sop_instance_uid=o.sop_instance_uid,
                    series_instance_uid=o.series_instance_uid,
                    sha256=o.sha256,
                    size_bytes=o.size_bytes,
                    path=str(o.path),
                )
                for o in package.objects
            ],
            fhir_changes=describe_changes(plan),
        )
        (out_dir / "approval-request.json").write_text(request.model_dump_json(indent=2))
        return {"approval_request": {**request.model_dump(mode="json"), "plan": plan.model_dump(mode="json")}}

    def approval(self, state: StudyState) -> dict[str, Any]:
        """The one interrupt of the study: nothing is written before a human answers it."""
        payload = {k: v for k, v in state["approval_request"].items() if k != "plan"}
        thread_id = get_config()["configurable"].get("thread_id")
        # Hashed as the reviewer saw it (the ApprovalRequest model's JSON), as runtime.decide hashes it.
        shown = ApprovalRequest.model_validate(payload).model_dump(mode="json")
        recorded = self.decisions.get(thread_id, payload["request_id"], payload_sha256(shown)) if thread_id else None
        decision = recorded or ApprovalDecision.model_validate(interrupt(payload))
        update: dict[str, Any] = {"decision": decision.model_dump(mode="json")}
        if decision.action == "approve":
            # Recorded before any write: if the FHIR half fails after the PACS half, the next
            # run finishes it from this plan without a second approval.
            plan = {"plan": state["approval_request"]["plan"], "decision": update["decision"]}
            self.decisions.remember_plan(payload["request_id"], plan)
            with fhir_client(self.settings) as fhir:
                set_status(
                    fhir,
                    state["task_id"],
                    "in-progress",
                    business="approved",
                    plan_json=json.dumps(plan),
                    note=(
                        f"approved {'AUTOMATICALLY (--yes, no human review) ' if decision.automatic else ''}"
                        f"by {decision.reviewer_name} ({decision.reviewer_id}) at {decision.decided_at.isoformat()}"
                    ),
                )
        return update

    def write_pacs(self, state: StudyState) -> dict[str, Any]:
        writes = [PendingDicomWrite.model_validate(w) for w in state["approval_request"]["dicom_writes"]]
        blobs: list[tuple[PendingDicomWrite, bytes]] = []
        for write in writes:
            data = Path(write.path).read_bytes()
            # The bytes hashed are the bytes sent: no second read between check and store.
            if hashlib.sha256(data).hexdigest() != write.sha256:
                raise StudyFailure(
                    f"{write.kind} {write.sop_instance_uid} of study {state['study']['study_instance_uid']} "
                    "changed after it was approved (sha256 differs); nothing was stored. Run the study again "
                    "and review the new result."
                )
            blobs.append((write, data))
        study_uid = state["study"]["study_instance_uid"]
        stored: list[str] = []
        with pacs_client(self.settings) as pacs:
            missing = [
                (w, data)
                for w, data in blobs
                if not pacs.instance_exists(study_uid, w.series_instance_uid, w.sop_instance_uid)
            ]
            if missing:
                result = pacs.store_part10([data for _, data in missing])
                if result.failed:
                    reasons = "; ".join(f"{f.sop_instance_uid}: {f.reason}" for f in result.failed)
                    raise StudyFailure(f"the PACS refused results of study {study_uid}: {reasons}")
                stored = [w.sop_instance_uid for w, _ in missing]
        return {"stored": stored}

    def write_fhir(self, state: StudyState) -> dict[str, Any]:
        repair = state.get("repair_plan")
        source = repair if repair is not None else {
            "plan": state["approval_request"]["plan"],
            "decision": state["decision"],
        }
        plan = WritebackPlan.model_validate(source["plan"])
        decision = ApprovalDecision.model_validate(source["decision"])
        with fhir_client(self.settings) as fhir:
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
                fhir,
                state["task_id"],
                "completed",
                business="reported",
                outputs=[report_ref, f"ImagingStudy/{plan.imaging_study_id}"],
            )
        return {"report_reference": report_ref, "outcome": "completed"}

    def record_rejection(self, state: StudyState) -> dict[str, Any]:
        decision = ApprovalDecision.model_validate(state["decision"])
        with fhir_client(self.settings) as fhir:
            set_status(
                fhir,
                state["task_id"],
                "rejected",
                business="rejected by reviewer",
                reason=decision.reason,
                note=f"rejected by {decision.reviewer_name} ({decision.reviewer_id}) at {decision.decided_at.isoformat()}",
            )
        return {"outcome": "rejected"}

    def record_failure(self, state: StudyState) -> dict[str, Any]:
        reason = f"{state.get('failed_stage', 'unknown stage')}: {state.get('error', 'unknown error')}"
        task_id = state.get("task_id")
        if task_id:
            try:
                with fhir_client(self.settings) as fhir:
                    set_status(fhir, task_id, "failed", business="failed", reason=reason[:1000])
            except Exception as exc:  # the failure itself is the result; FHIR may be what failed
                log.warning("could not record failure of study %s in FHIR: %s", state["imaging_study_id"], exc)
        _progress(state["imaging_study_id"], "failed", 100.0, error=reason)
        return {"outcome": "failed"}


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


def _snomed(key: str) -> str:
    return STRUCTURES[key].snomed_code


def _created_at(authored: Any) -> str:
    when = authored if isinstance(authored, datetime) else datetime.now(UTC)
    return when.replace(microsecond=0).isoformat()


def _location_of(bundle: Any, resource_type: str) -> str:
    for entry in bundle.entry or []:
        location = entry.response.location if entry.response else None
        if location and f"{resource_type}/" in location:
            tail = location.split(f"{resource_type}/", 1)[1]
            return f"{resource_type}/{tail.split('/')[0]}"
    return resource_type


def _after(stage: str, next_stage: str) -> Callable[[StudyState], str]:
    def route(state: StudyState) -> str:
        return "record_failure" if state.get("error") else next_stage

    route.__name__ = f"after_{stage}"
    return route


def build_study_graph(settings: Settings, checkpointer: Checkpointer = None) -> Any:
    """Compile the study pipeline. Pass a checkpointer to run it on its own (approvals need one)."""
    p = StudyPipeline(settings)
    graph = StateGraph(StudyState)
    graph.add_node("start", _step("start", 2)(p.start))
    graph.add_node("fetch", _step("fetch", 10)(p.fetch))
    graph.add_node("assemble", _step("assemble", 30)(p.assemble))
    graph.add_node("preflight", _step("preflight", 35)(p.preflight))
    graph.add_node("segment", _step("segment", 40)(p.segment))
    graph.add_node("build", _step("build", 70)(p.build))
    graph.add_node("approval", _step("approval", 85)(p.approval))
    graph.add_node("write_pacs", _step("write_pacs", 90)(p.write_pacs))
    graph.add_node("write_fhir", _step("write_fhir", 95)(p.write_fhir))
    graph.add_node("record_rejection", p.record_rejection)
    graph.add_node("record_failure", p.record_failure)

    def after_start(state: StudyState) -> str:
        if state.get("error"):
            return "record_failure"
        return "write_fhir" if state.get("repair_plan") else "fetch"

    def after_approval(state: StudyState) -> str:
        if state.get("error"):
            return "record_failure"
        return "write_pacs" if state["decision"]["action"] == "approve" else "record_rejection"

    graph.add_edge(START, "start")
    graph.add_conditional_edges("start", after_start, ["fetch", "write_fhir", "record_failure"])
    for stage, next_stage in [
        ("fetch", "assemble"),
        ("assemble", "preflight"),
        ("preflight", "segment"),
        ("segment", "build"),
        ("build", "approval"),
        ("write_pacs", "write_fhir"),
    ]:
        graph.add_conditional_edges(stage, _after(stage, next_stage), [next_stage, "record_failure"])
    graph.add_conditional_edges("approval", after_approval, ["write_pacs", "record_rejection", "record_failure"])
    graph.add_conditional_edges("write_fhir", _after("write_fhir", END), [END, "record_failure"])
    graph.add_edge("record_rejection", END)
    graph.add_edge("record_failure", END)
    return graph.compile(checkpointer=checkpointer, name="study")
