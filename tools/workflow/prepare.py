"""The study steps before approval: read, fetch, assemble, check, segment, build. They write nothing
clinical: only the job's FHIR Task (bookkeeping) and files in the work store.

Each step is a plain function with its clients passed in; the study graph wraps each one in a thin
node, the planner's look-only tools and `imaging-agent contour` call the same functions.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread

from tools.dicomweb.client import DicomwebClient
from tools.fhir.client import FhirClient
from tools.fhir.task import approved_plan, ensure_task
from tools.fhir.worklist import study_instance_uid as uid_of_study
from tools.ids import check_dicom_uid, check_fhir_id
from tools.imaging.preflight import preflight, preflight_mr, preflight_radiograph
from tools.imaging.projection import choose_frontal, is_projection, lateral_of, read_projection, view_of
from tools.imaging.series_choice import choose_series
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.imaging.volume_store import content_key, load_volume, save_volume
from tools.reporting.context import report_context
from tools.reporting.cxrreportgen import CxrReportGenDrafter, DraftError
from tools.reporting.models import DraftReport
from tools.results.fhir_report import StructureVolume, WritebackPlan, describe_changes
from tools.results.package import ALL_FORMATS, OutputFormat, ResultPackage, build_package
from tools.segmentation.base import STRUCTURES
from tools.segmentation.catalog import EngineCatalog
from tools.segmentation.exclusion import Exclusion
from tools.segmentation.input_check import InputCheck, InputCheckError, MedImageInsightChecker
from tools.segmentation.result_store import load_result, save_result
from tools.workflow.approval import (
    SOP_CLASS_NAMES,
    ApprovalRequest,
    PendingDicomWrite,
    ReviewFiles,
    StructureForReview,
)
from tools.workflow.decisions import DecisionStore
from tools.workflow.failure import StudyFailure
from tools.workflow.identity import check_membership, check_same_patient, series_patient
from tools.workflow.records import (
    ApprovedPlan,
    BuiltResults,
    FetchedSeries,
    StoredFile,
    StoredSegmentation,
    StudyRecord,
    TaskRecord,
    Variant,
)
from tools.workflow.segment import segment_with_fallback

log = logging.getLogger(__name__)

# The fetched series' Part 10 files, inside a study's work folder.
SOURCE_DIR = "source"
# A radiograph study's drafted findings, kept so that a rebuild (a reviewer's edit, a resume) shows
# and stores the very draft first shown rather than asking the model again.
DRAFT_FILE = "draft-report.json"
# What MedImageInsight made of the series, for the card (kept beside it like the draft).
INPUT_CHECK_FILE = "input-check.json"


def read_study(fhir: FhirClient, imaging_study_id: str, patient_identifier_system: str) -> StudyRecord:
    """The ImagingStudy and its patient from FHIR: identifiers, dates, version. Reads only.

    The Study Instance UID and the patient reference come from the EHR and are checked before a
    URL is built from them; the patient's identifier is the one in `patient_identifier_system`.
    """
    study = fhir.read("ImagingStudy", imaging_study_id)
    study_uid = uid_of_study(study)
    if study_uid is None:
        raise StudyFailure(
            f"ImagingStudy/{study.id} has no Study Instance UID identifier (system urn:dicom:uid), "
            "so its images cannot be found in the PACS. Add the identifier and run again."
        )
    check_dicom_uid(study_uid, f"the Study Instance UID identifier of ImagingStudy/{study.id}")
    patient_ref = study.subject.reference if study.subject else None
    patient_name, patient_id, issuer = None, None, None
    if patient_ref and patient_ref.startswith("Patient/"):
        patient_fhir_id = check_fhir_id(patient_ref.split("/", 1)[1], f"the subject of ImagingStudy/{study.id}")
        patient = fhir.read("Patient", patient_fhir_id)
        patient_name = patient.name[0].text if patient.name else None
        identifier = next((i for i in patient.identifier or [] if i.system == patient_identifier_system), None)
        if identifier is not None:
            patient_id = identifier.value
            assigner = identifier.assigner
            issuer = (assigner.display or (assigner.identifier.value if assigner.identifier else None)) if assigner else None
    return StudyRecord(
        imaging_study_id=imaging_study_id,
        study_instance_uid=study_uid,
        status=str(study.status),
        version=study.meta.versionId if study.meta else None,
        patient_reference=patient_ref,
        patient_display_name=patient_name,
        patient_id=patient_id,
        patient_issuer=issuer,
        started=str(study.started) if study.started else None,
        description=study.description,
    )


def open_task(
    fhir: FhirClient, pacs: DicomwebClient, decisions: DecisionStore, study: StudyRecord, engine: str
) -> TaskRecord:
    """The job's Task (found or created, in-progress), with a plan approved earlier when it may be reused."""
    task = ensure_task(fhir, study.imaging_study_id, study.study_instance_uid, study.patient_reference, engine)
    authored = task.authoredOn if isinstance(task.authoredOn, datetime) else datetime.now(UTC)
    recorded = approved_plan(task)
    reusable = None
    if recorded is not None and study.status == "registered":
        reusable = reusable_plan(pacs, decisions, study, recorded)
    return TaskRecord(
        task_id=str(task.id), created_at=authored.replace(microsecond=0).isoformat(), reusable=reusable
    )


def reusable_plan(
    pacs: DicomwebClient, decisions: DecisionStore, study: StudyRecord, recorded: dict[str, Any]
) -> ApprovedPlan | None:
    """A write plan read back from the Task, when it is provably ours and still valid.

    The Task lives in the EHR, where others can write: the plan must name this very study and
    patient, its approval must be in the local decisions table (byte for byte), and every approved
    object must already be in the PACS. Otherwise the study simply runs again for a new approval.
    """
    try:
        approved = ApprovedPlan.model_validate(recorded)
    except ValueError:
        log.warning("study %s: unreadable plan in its Task; running it again", study.imaging_study_id)
        return None
    plan = approved.plan
    same_study = (
        plan.imaging_study_id == study.imaging_study_id
        and plan.study_instance_uid == study.study_instance_uid
        and plan.patient_reference == (study.patient_reference or "")
    )
    approved_here = decisions.plan_approved(plan.result_uid, recorded)
    if not (same_study and approved_here and approved.decision.action == "approve"):
        log.warning("study %s: the Task's plan is not one approved here; running it again", study.imaging_study_id)
        return None
    # The approved bytes, not just the UIDs: another object under a derived UID means a new run,
    # whose store then fails with an AuditEvent (tools/workflow/write.py).
    for o in plan.objects:
        held = pacs.retrieve_instance_bytes(plan.study_instance_uid, o.series_instance_uid, o.sop_instance_uid)
        if held is None or hashlib.sha256(held).hexdigest() != o.sha256:
            log.warning(
                "study %s: approved object %s missing from the PACS or not the approved bytes; running it again",
                study.imaging_study_id,
                o.sop_instance_uid,
            )
            return None
    return approved


def fetch_series(
    pacs: DicomwebClient, study: StudyRecord, work_root: Path, patient_identifier_system: str
) -> FetchedSeries:
    """Choose the CT (or, lacking one, the chest radiograph) series by rules and download it, once, into a folder named by its content.

    Every UID is checked before a file name is built from it, every instance must be of the study
    and series asked for, and the series' patient must be the ImagingStudy's (tools/workflow/identity.py),
    also when the files were downloaded by an earlier run: the EHR side may have changed since.
    """
    study_uid = study.study_instance_uid
    chosen = choose_series(study_uid, pacs.search_series(study_uid))
    series_uid = check_dicom_uid(chosen.series_instance_uid, f"a Series Instance UID the PACS listed in study {study_uid}")
    listed = [
        check_dicom_uid(i.sop_instance_uid, f"a SOP Instance UID the PACS listed in series {series_uid}")
        for i in pacs.search_instances(study_uid, series_uid)
    ]
    work = work_root / content_key(series_uid, listed)
    source = work / SOURCE_DIR
    have = {p.stem for p in source.glob("*.dcm")}
    downloaded: list[Path] = []
    if have != set(listed):
        downloaded = _download(pacs, study_uid, series_uid, work / "source.partial")
        headers = [dcmread(p, stop_before_pixels=True) for p in downloaded]
    else:
        headers = [dcmread(p, stop_before_pixels=True) for p in sorted(source.glob("*.dcm"))]
    check_membership(headers, study_uid, series_uid, listed)
    patient = series_patient(headers, series_uid)
    check_same_patient(study, patient, series_uid, patient_identifier_system)
    if downloaded:
        shutil.rmtree(source, ignore_errors=True)  # what an interrupted earlier run left
        source.mkdir(parents=True)
        for ds, path in zip(headers, downloaded, strict=True):
            path.replace(source / f"{ds.SOPInstanceUID}.dcm")
        downloaded[0].parent.rmdir()
    return FetchedSeries(series=chosen, work_dir=work, patient=patient)


def _download(pacs: DicomwebClient, study_uid: str, series_uid: str, folder: Path) -> list[Path]:
    """The series' files as the PACS stored them, into `folder`, named by arrival.

    The bytes are kept as sent, never decoded and encoded again, and one instance at a time is
    in memory. The files get their SOP Instance UID names only after check_membership has
    checked those UIDs.
    """
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paths = []
    for number, data in enumerate(pacs.iter_series_bytes(study_uid, series_uid)):
        path = folder / f"{number:06d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def assemble_stored(work_dir: Path) -> StoredFile:
    """The downloaded series as one geometry-checked volume in the work store; a radiograph series as
    its frontal image (tools/imaging/projection.py), a one-plane volume of presentation values."""
    datasets = read_series_dir(work_dir / SOURCE_DIR)
    modality = str(datasets[0].get("Modality", "")).upper()
    if is_projection(modality):
        volume, _ = read_projection(choose_frontal(datasets, str(datasets[0].get("SeriesInstanceUID", ""))))
    else:
        volume = assemble_volume(datasets, required_modality="MR" if modality == "MR" else "CT")
    path = work_dir / "volume.npz"
    return StoredFile(path=path, sha256=save_volume(volume, path))


def preflight_stored(volume_file: StoredFile) -> None:
    """Refuse a volume the engines cannot contour (modality, coverage, spacing), with the reason."""
    volume = load_volume(volume_file.path, volume_file.sha256)
    if is_projection(volume.modality):
        preflight_radiograph(volume)
    elif volume.modality == "MR":
        preflight_mr(volume)
    else:
        preflight(volume)


def segment_stored(
    engines: EngineCatalog,
    volume_file: StoredFile,
    work_dir: Path,
    chain: Sequence[str],
    targets: Sequence[str],
    variant: Variant,
    exclusion_for: Callable[[Volume], Exclusion | None] | None = None,
) -> StoredSegmentation:
    """`segment_with_fallback` on a stored volume, leaving out what `exclusion_for` finds for it (the
    study's GTV); the result goes to the work store."""
    volume = load_volume(volume_file.path, volume_file.sha256)
    exclusion = exclusion_for(volume) if exclusion_for is not None else None
    result, not_used, errors = segment_with_fallback(engines, volume, chain, targets, exclusion)
    path = work_dir / f"{variant}-segmentation-{result.engine}.npz"
    return StoredSegmentation(
        path=path, sha256=save_result(result, path), engine_fallbacks=not_used, engine_errors=errors
    )


def check_input(checker: MedImageInsightChecker, volume_file: StoredFile, work_dir: Path, *, refuse: bool) -> InputCheck:
    """Is the series what the goal expects? Refuses (StudyFailure) a mismatch when `refuse`; otherwise the
    check is kept for the card, where a mismatch is a QA flag. Asked once per series content."""
    kept = work_dir / INPUT_CHECK_FILE
    if kept.is_file():
        check = InputCheck.model_validate_json(kept.read_text())
    else:
        volume = load_volume(volume_file.path, volume_file.sha256)
        try:
            check = checker.check(volume)
        except InputCheckError as exc:
            raise StudyFailure(str(exc)) from exc
        partial = kept.with_suffix(".partial")
        partial.write_text(check.model_dump_json(indent=2))
        partial.replace(kept)
    if refuse and not check.matches:
        flag = check.flag(load_volume(volume_file.path, volume_file.sha256).series_instance_uid)
        raise StudyFailure(
            f"{flag.message if flag else ''} Refused before segmentation (IMAGING_AGENT_INPUT_CHECK=refuse): nothing was "
            "segmented or stored. Send the expected series, or set IMAGING_AGENT_INPUT_CHECK=flag to review such studies."
        )
    return check


def draft_report(
    drafter: CxrReportGenDrafter, fhir: FhirClient, study: StudyRecord, fetched: FetchedSeries
) -> DraftReport:
    """Draft findings for a radiograph study: its frontal (and lateral) image and the order's reason,
    without the patient's names and identifiers, to the report model. Writes nothing clinical."""
    kept = fetched.work_dir / DRAFT_FILE
    if kept.is_file():
        return DraftReport.model_validate_json(kept.read_text())
    datasets = read_series_dir(fetched.work_dir / SOURCE_DIR)
    frontal_ds = choose_frontal(datasets, fetched.series.series_instance_uid)
    lateral_ds = lateral_of(datasets)
    frontal, _ = read_projection(frontal_ds)
    lateral = read_projection(lateral_ds)[0] if lateral_ds is not None else None
    context = report_context(
        fhir,
        study.imaging_study_id,
        [view_of(frontal_ds), view_of(lateral_ds) if lateral_ds is not None else None],
        names=[study.patient_display_name or "", fetched.patient.name or ""],
        identifiers=[study.patient_id or "", fetched.patient.patient_id or ""],
    )
    try:
        draft = drafter.draft(frontal, lateral, context)
    except DraftError as exc:
        raise StudyFailure(str(exc)) from exc
    partial = kept.with_suffix(".partial")
    partial.write_text(draft.model_dump_json(indent=2))
    partial.replace(kept)
    return draft


def _add_draft(package: ResultPackage, source: Sequence[Dataset], volume: Volume, draft: DraftReport, created: datetime) -> ResultPackage:
    """The draft's SR and a preview of its boxes, added to the package (built and hashed like the rest)."""
    from tools.results.dicom_objects import write_object
    from tools.results.draft_sr import draft_sr_dataset
    from tools.results.previews import render_draft_preview

    frontal = next((ds for ds in source if str(ds.SOPInstanceUID) == draft.frontal_sop_instance_uid), None)
    if frontal is None:
        raise StudyFailure(
            f"the draft findings were made on image {draft.frontal_sop_instance_uid}, which is not in series "
            f"{volume.series_instance_uid} any more; run the study again."
        )
    sr = write_object(draft_sr_dataset(frontal, draft, created=created), "SR", package.out_dir / "draft-sr.dcm")
    preview = render_draft_preview(volume, draft, package.out_dir / "previews")
    return package.model_copy(update={"objects": [*package.objects, sr], "previews": [*package.previews, preview]})


def build_results(
    study: StudyRecord,
    fetched: FetchedSeries,
    volume_file: StoredFile,
    segmentation: StoredSegmentation,
    created_at: str,
    variant: Variant,
    optional_formats: Sequence[OutputFormat] = (),
    draft: DraftReport | None = None,
    engine_endpoints: Mapping[str, str] | None = None,
) -> BuiltResults:
    """RTSTRUCT, SEG, SR, previews and report on disk, hashed; the approval request and write plan.

    `optional_formats` adds the overlay series and the Key Object Selection (tools/results/package.py)
    to the objects approved and stored.
    """
    volume = load_volume(volume_file.path, volume_file.sha256)
    result = load_result(segmentation.path, segmentation.sha256)
    checked = fetched.work_dir / INPUT_CHECK_FILE
    input_check = InputCheck.model_validate_json(checked.read_text()) if checked.is_file() else None
    if input_check is not None and (flag := input_check.flag(volume.series_instance_uid)):
        result.flags.append(flag)
    source = [dcmread(p, stop_before_pixels=True) for p in sorted((fetched.work_dir / SOURCE_DIR).glob("*.dcm"))]
    # A corrected result is built beside the AI's, which stays as the reviewer saw it first.
    edited = f"-edit-{result.edit.digest[:16]}" if result.edit else ""
    out_dir = fetched.work_dir / f"{variant}-results-{result.engine}{edited}"
    package = build_package(
        source, volume, result, out_dir, formats=[*ALL_FORMATS, *optional_formats],
        created=datetime.fromisoformat(created_at),
    )
    if draft is not None:
        package = _add_draft(package, source, volume, draft, datetime.fromisoformat(created_at))
    plan = _writeback_plan(study, fetched, package, segmentation.engine_fallbacks, draft)
    plan = plan.model_copy(update={"engine_endpoint": (engine_endpoints or {}).get(package.engine)})
    review_files = ReviewFiles(
        volume_path=str(volume_file.path),
        volume_sha256=volume_file.sha256,
        masks_path=str(segmentation.path),
        masks_sha256=segmentation.sha256,
    )
    request = _approval_request(study, fetched, package, plan, review_files)
    request = request.model_copy(update={"input_check": input_check, "engine_endpoint": plan.engine_endpoint})
    (out_dir / "approval-request.json").write_text(request.model_dump_json(indent=2))
    return BuiltResults(request=request, plan=plan)


def _writeback_plan(
    study: StudyRecord, fetched: FetchedSeries, package: ResultPackage, fallbacks: list[str], draft: DraftReport | None
) -> WritebackPlan:
    return WritebackPlan(
        result_uid=package.result_uid,
        imaging_study_id=study.imaging_study_id,
        imaging_study_version=study.version,
        study_instance_uid=study.study_instance_uid,
        patient_reference=study.patient_reference or "",
        engine=package.engine,
        engine_version=package.engine_version,
        engine_fallbacks=fallbacks,
        structures=[
            StructureVolume(
                key=s.key,
                display=s.display,
                snomed_code=STRUCTURES[s.key].snomed_code,
                volume_ml=s.measurements.volume_ml,
                area_mm2=s.measurements.area_mm2,
            )
            for s in package.structures
        ],
        modality=fetched.series.modality,
        draft=draft,
        draft_sr_uid=package.objects[-1].sop_instance_uid if draft is not None else None,
        objects=package.objects,
        conclusion=package.conclusion,
        report_text=package.report_path.read_text(),
        edit=package.edit,
    )


def _approval_request(
    study: StudyRecord, fetched: FetchedSeries, package: ResultPackage, plan: WritebackPlan, review_files: ReviewFiles
) -> ApprovalRequest:
    return ApprovalRequest(
        request_id=package.result_uid,
        imaging_study_id=study.imaging_study_id,
        imaging_study_version=plan.imaging_study_version,
        study_instance_uid=study.study_instance_uid,
        patient_reference=plan.patient_reference,
        patient_id=study.patient_id,
        patient_display_name=study.patient_display_name,
        dicom_patient_id=fetched.patient.patient_id,
        dicom_issuer_of_patient_id=fetched.patient.issuer,
        dicom_patient_name=fetched.patient.name,
        study_date=study.started,
        study_description=study.description,
        series=fetched.series,
        engine=package.engine,
        engine_version=package.engine_version,
        engine_fallbacks=plan.engine_fallbacks,
        structures=[
            StructureForReview(
                key=s.key,
                display=s.display,
                volume_ml=round(s.measurements.volume_ml, 1),
                mean_hu=round(s.measurements.mean_hu or 0.0, 1),
                n_components=s.measurements.n_components,
                confidence=s.confidence,
                area_mm2=s.measurements.area_mm2,
            )
            for s in package.structures
        ],
        flags=package.flags,
        previews=[str(p) for p in package.previews],
        preview_sha256={str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in package.previews},
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
        review_files=review_files,
        edit=package.edit,
        draft=plan.draft,
    )

