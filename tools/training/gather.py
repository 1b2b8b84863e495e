"""Find training data in the PACS: CT series whose lung contours a person approved or made.

Two kinds of label objects (RTSTRUCT, PS3.3 A.19; SEG, PS3.3 A.51) are taken:

- **Approved agent output.** An object made by imaging-agent (General Equipment or
  Contributing Equipment Manufacturer "imaging-agent", PS3.3 C.7.5.1 / C.12.1). Our RTSTRUCTs
  stay ``ApprovalStatus UNAPPROVED`` in DICOM (PS3.3 C.8.8.16: only a person approves), so the
  approval is read where the agent records it: after a reviewer approves, the writer marks the
  FHIR ImagingStudy ``available`` and lists the result series in ``ImagingStudy.series``
  (`tools.results.fhir_report.updated_imaging_study`). An object of ours whose series is not
  listed there was never approved (rejected, or stored behind the agent's back) and is skipped.
- **Human-made.** Any other structure set in which a person drew or edited the lungs: a lung
  ROI with ROI Generation Algorithm MANUAL or SEMIAUTOMATIC (PS3.3 C.8.8.5), a lung segment
  with Segment Algorithm Type MANUAL or SEMIAUTOMATIC (C.8.20.2), or an RTSTRUCT with
  ``ApprovalStatus APPROVED``. A radiologist's correction stored as a new series is one of these.

Each label object is paired with the CT series it references (RTSTRUCT: Referenced Frame of
Reference > RT Referenced Series and the Contour Image Sequences; SEG: Referenced Series
Sequence), which must hold every referenced SOP Instance and share the label's Frame of
Reference UID. One case per CT series: a human-made object beats an agent one, a SEG (voxel
exact) beats an RTSTRUCT, and a newer object an older one. Everything not taken is reported
with a reason a person can act on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import highdicom as hd
import numpy as np
from pydantic import BaseModel
from pydicom import Dataset

from tools.dicomweb.client import DicomwebClient, PacsError
from tools.fhir.builders import uid_search_token
from tools.fhir.client import FhirClient
from tools.imaging.volume import SeriesRefusedError, Volume, assemble_volume
from tools.results.common import MANUFACTURER
from tools.results.rtstruct import RTStructError, rtstruct_masks
from tools.segmentation.base import STRUCTURES
from tools.training.dataset import (
    DEFAULT_PIXDIM,
    CaseError,
    CaseInfo,
    Origin,
    case_arrays,
    case_path,
    read_case_info,
    write_case,
    write_skipped,
)

log = logging.getLogger(__name__)

LabelKind = Literal["RTSTRUCT", "SEG"]
_PERSON_ALGORITHMS = frozenset({"MANUAL", "SEMIAUTOMATIC"})
_LUNG_KEYS = ("left-lung", "right-lung")
_SIDE_WORDS = {"left-lung": {"left", "l", "lt"}, "right-lung": {"right", "r", "rt"}}


class TrainingPair(BaseModel):
    """A CT series and the label object taken for it, saved as a case."""

    study_instance_uid: str
    ct_series_instance_uid: str
    label_series_instance_uid: str
    label_sop_instance_uid: str
    label_kind: LabelKind
    origin: Origin
    frame_of_reference_uid: str
    case_path: Path
    reused: bool = False


class SkippedCase(BaseModel):
    """A label object not taken, and why."""

    study_instance_uid: str
    series_instance_uid: str
    label_kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.label_kind} series {self.series_instance_uid} (study {self.study_instance_uid}): {self.reason}"


class GatherReport(BaseModel):
    pairs: list[TrainingPair]
    skipped: list[SkippedCase]
    studies_scanned: int


class _Skip(Exception):
    """Internal: this label object cannot be used; the message is the reason."""


@dataclass
class _Label:
    """One label object as read from the PACS, with what pairing needs."""

    ds: Dataset
    kind: LabelKind
    study_uid: str
    series_uid: str
    sop_uid: str
    lungs: dict[str, tuple[int, str, str]]
    """structure key -> (ROI / segment number, its name, its generation algorithm)"""
    frame_of_reference_uid: str
    referenced_series: set[str] = field(default_factory=set)
    referenced_sops: set[str] = field(default_factory=set)
    origin: Origin = "human-made"

    @property
    def created(self) -> str:
        for date, time in (("StructureSetDate", "StructureSetTime"), ("ContentDate", "ContentTime"), ("SeriesDate", "SeriesTime")):
            if self.ds.get(date):
                return f"{self.ds.get(date)}{self.ds.get(time, '')}"
        return ""


def lung_key(name: str, code: str | None = None) -> str | None:
    """The lung a ROI or segment names: SNOMED CT code first, else a plain name such as
    "Lung_L", "Left lung", "LT LUNG". Names with any other word ("Lung_L-GTV", "Lungs") are
    not a whole single lung and give None."""
    for key, spec in STRUCTURES.items():
        if code and code == spec.snomed_code and key in _LUNG_KEYS:
            return key
    words = re.findall(r"[a-z]+", name.lower())
    if "lung" not in words:
        return None
    others = set(words) - {"lung"}
    for key, side in _SIDE_WORDS.items():
        if others and others <= side:
            return key
    return None


def _rtstruct_label(ds: Dataset, study_uid: str, series_uid: str) -> _Label:
    codes: dict[int, str] = {}
    for observation in ds.get("RTROIObservationsSequence", []):
        identification = observation.get("RTROIIdentificationCodeSequence") or []
        if identification:
            codes[int(observation.ReferencedROINumber)] = str(identification[0].get("CodeValue", ""))
    lungs: dict[str, tuple[int, str, str]] = {}
    frames: set[str] = set()
    for roi in ds.get("StructureSetROISequence", []):
        number, name = int(roi.ROINumber), str(roi.get("ROIName", ""))
        key = lung_key(name, codes.get(number))
        if key is not None and key not in lungs:
            lungs[key] = (number, name, str(roi.get("ROIGenerationAlgorithm", "")).upper())
            frames.add(str(roi.get("ReferencedFrameOfReferenceUID", "")))
    label = _Label(ds, "RTSTRUCT", study_uid, series_uid, str(ds.SOPInstanceUID), lungs, "")
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                label.referenced_series.add(str(series.SeriesInstanceUID))
                label.referenced_sops.update(str(i.ReferencedSOPInstanceUID) for i in series.get("ContourImageSequence", []))
    lung_numbers = {number for number, _, _ in lungs.values()}
    for roi_contour in ds.get("ROIContourSequence", []):
        if int(roi_contour.ReferencedROINumber) not in lung_numbers:
            continue
        for contour in roi_contour.get("ContourSequence", []):
            label.referenced_sops.update(str(i.ReferencedSOPInstanceUID) for i in contour.get("ContourImageSequence", []))
    if len(frames) > 1:
        raise _Skip(f"its lung ROIs are in {len(frames)} different frames of reference ({', '.join(sorted(frames))})")
    label.frame_of_reference_uid = next(iter(frames), "")
    return label


def _seg_label(ds: Dataset, study_uid: str, series_uid: str) -> _Label:
    lungs: dict[str, tuple[int, str, str]] = {}
    for segment in ds.get("SegmentSequence", []):
        codes = segment.get("SegmentedPropertyTypeCodeSequence") or []
        key = lung_key(str(segment.get("SegmentLabel", "")), str(codes[0].get("CodeValue", "")) if codes else None)
        if key is not None and key not in lungs:
            lungs[key] = (int(segment.SegmentNumber), str(segment.get("SegmentLabel", "")), str(segment.get("SegmentAlgorithmType", "")).upper())
    label = _Label(ds, "SEG", study_uid, series_uid, str(ds.SOPInstanceUID), lungs, str(ds.get("FrameOfReferenceUID", "")))
    for series in ds.get("ReferencedSeriesSequence", []):
        label.referenced_series.add(str(series.SeriesInstanceUID))
        label.referenced_sops.update(str(i.ReferencedSOPInstanceUID) for i in series.get("ReferencedInstanceSequence", []))
    return label


def _made_by_agent(ds: Dataset) -> bool:
    if str(ds.get("Manufacturer", "")) == MANUFACTURER:
        return True
    return any(str(item.get("Manufacturer", "")) == MANUFACTURER for item in ds.get("ContributingEquipmentSequence", []))


def _made_by_person(label: _Label) -> bool:
    if any(algorithm in _PERSON_ALGORITHMS for _, _, algorithm in label.lungs.values()):
        return True
    return label.kind == "RTSTRUCT" and str(label.ds.get("ApprovalStatus", "")).upper() == "APPROVED"


class _FhirApprovals:
    """Which result series the EHR lists as approved, per study (looked up once, when needed)."""

    def __init__(self, fhir: FhirClient) -> None:
        self._fhir = fhir
        self._cache: dict[str, tuple[set[str], str]] = {}

    def approved(self, study_uid: str) -> tuple[set[str], str]:
        """(approved series UIDs, why a series outside the set is not approved)."""
        if study_uid not in self._cache:
            found = self._fhir.search("ImagingStudy", {"identifier": uid_search_token(study_uid)})
            if not found:
                self._cache[study_uid] = (set(), f"no FHIR ImagingStudy has identifier urn:oid:{study_uid}, so no approval is recorded")
            else:
                study = found[0]
                if study.status != "available":
                    self._cache[study_uid] = (set(), f"ImagingStudy/{study.id} has status '{study.status}', so no result of it was approved")
                else:
                    listed = {str(s.uid) for s in study.series or []}
                    self._cache[study_uid] = (listed, f"ImagingStudy/{study.id} does not list this series among its approved results")
        return self._cache[study_uid]


def _classify(label: _Label, approvals: _FhirApprovals) -> Origin:
    if not label.lungs:
        names = [str(r.get("ROIName", "")) for r in label.ds.get("StructureSetROISequence", [])] or [
            str(s.get("SegmentLabel", "")) for s in label.ds.get("SegmentSequence", [])
        ]
        raise _Skip(f"it has no lung ROI (ROIs: {', '.join(names) or 'none'}); training needs Left and Right lung")
    missing = [STRUCTURES[k].display for k in _LUNG_KEYS if k not in label.lungs]
    if missing:
        raise _Skip(
            f"it has no {', '.join(missing)} ROI; a case needs both lungs, else the missing one would be taught as background"
        )
    if str(label.ds.get("ApprovalStatus", "")).upper() == "REJECTED":
        raise _Skip("its ApprovalStatus is REJECTED (PS3.3 C.8.8.16): a reviewer turned these contours down")
    if _made_by_person(label):
        return "human-made"
    if _made_by_agent(label.ds):
        approved, why = approvals.approved(label.study_uid)
        if label.series_uid in approved:
            return "approved-agent-output"
        raise _Skip(f"an imaging-agent result that was never approved: {why}")
    algorithms = sorted({algorithm or "unknown" for _, _, algorithm in label.lungs.values()})
    raise _Skip(
        f"automatic contours (algorithm {', '.join(algorithms)}) by {str(label.ds.get('Manufacturer', '') or 'unknown equipment')[:64]}"
        " that no person approved; store a reviewed copy (ApprovalStatus APPROVED or ROIs marked MANUAL) to use it"
    )


def _by_preference(labels: Sequence[_Label]) -> list[_Label]:
    """Human-made first, SEG (voxel exact) before RTSTRUCT, newest first (sorts are stable)."""
    newest_first = sorted(labels, key=lambda label: label.created, reverse=True)
    return sorted(newest_first, key=lambda label: (label.origin != "human-made", label.kind != "SEG"))


def _ct_series(pacs: DicomwebClient, label: _Label, ct_uids: Sequence[str]) -> str:
    """The CT series holding every instance the label references."""
    if label.referenced_series:
        candidates = [uid for uid in ct_uids if uid in label.referenced_series]
        if not candidates:
            raise _Skip(
                f"it references series {', '.join(sorted(label.referenced_series))}, which is not a CT series of this "
                "study in the PACS; store that CT series, then gather again"
            )
    else:
        candidates = list(ct_uids)
    if not label.referenced_sops:
        raise _Skip("it references no CT image (no Contour Image / Referenced Instance Sequence), so it cannot be paired")
    best: tuple[int, str, set[str]] | None = None
    for uid in candidates:
        present = {i.sop_instance_uid for i in pacs.search_instances(label.study_uid, uid)}
        missing = label.referenced_sops - present
        if best is None or len(missing) < best[0]:
            best = (len(missing), uid, missing)
    if best is None:
        raise _Skip("the study holds no CT series to pair it with")
    count, uid, missing = best
    if count:
        raise _Skip(
            f"{count} of the {len(label.referenced_sops)} CT instances it references are missing from CT series {uid} "
            f"in the PACS (e.g. {sorted(missing)[0]}); store the complete series, then gather again"
        )
    return uid


def _masks(label: _Label, volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    if label.kind == "RTSTRUCT":
        try:
            masks = rtstruct_masks(label.ds, volume)
        except RTStructError as exc:
            raise _Skip(str(exc)) from exc
        left, right = (masks[label.lungs[key][1]] for key in _LUNG_KEYS)
    else:
        numbers = [label.lungs[key][0] for key in _LUNG_KEYS]
        try:
            pixels = hd.seg.Segmentation.from_dataset(label.ds, copy=False).get_pixels_by_source_instance(
                volume.sop_instance_uids, segment_numbers=numbers, assert_missing_frames_are_empty=True
            )
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise _Skip(f"its segments cannot be read onto CT series {volume.series_instance_uid}: {exc}") from exc
        left, right = pixels[..., 0].astype(bool), pixels[..., 1].astype(bool)
    for key, mask in zip(_LUNG_KEYS, (left, right), strict=True):
        if not mask.any():
            raise _Skip(f"ROI '{label.lungs[key][1]}' has no voxel on CT series {volume.series_instance_uid}")
    return left, right


class _Gatherer:
    def __init__(self, pacs: DicomwebClient, fhir: FhirClient, cases_dir: Path, pixdim: Sequence[float]) -> None:
        self.pacs = pacs
        self.approvals = _FhirApprovals(fhir)
        self.cases_dir = cases_dir
        self.pixdim = tuple(float(p) for p in pixdim)
        self.pairs: list[TrainingPair] = []
        self.skipped: list[SkippedCase] = []

    def skip(self, study_uid: str, series_uid: str, kind: str, reason: str) -> None:
        self.skipped.append(SkippedCase(study_instance_uid=study_uid, series_instance_uid=series_uid, label_kind=kind, reason=reason))
        log.info("training data: skipped %s series %s (study %s): %s", kind, series_uid, study_uid, reason)

    def study(self, study_uid: str) -> None:
        series = self.pacs.search_series(study_uid)
        ct_uids = [s.series_instance_uid for s in series if s.modality == "CT"]
        labels: list[_Label] = []
        for summary in series:
            if summary.modality not in ("RTSTRUCT", "SEG"):
                continue
            kind: LabelKind = "RTSTRUCT" if summary.modality == "RTSTRUCT" else "SEG"
            try:
                datasets = self.pacs.retrieve_series(study_uid, summary.series_instance_uid)
            except PacsError as exc:
                self.skip(study_uid, summary.series_instance_uid, kind, f"the PACS could not send it: {exc}")
                continue
            for ds in datasets:
                try:
                    reader = _rtstruct_label if kind == "RTSTRUCT" else _seg_label
                    label = reader(ds, study_uid, summary.series_instance_uid)
                    label.origin = _classify(label, self.approvals)
                except _Skip as exc:
                    self.skip(study_uid, summary.series_instance_uid, kind, str(exc))
                    continue
                labels.append(label)
        taken: dict[str, _Label] = {}
        for label in _by_preference(labels):
            try:
                ct_uid = _ct_series(self.pacs, label, ct_uids)
                if ct_uid in taken:
                    first = taken[ct_uid]
                    raise _Skip(
                        f"CT series {ct_uid} already has training labels from {first.kind} series {first.series_uid} "
                        f"({first.origin}), which is preferred (human-made first, then SEG, then newest)"
                    )
                self.pairs.append(self.case(label, ct_uid))
                taken[ct_uid] = label
            except _Skip as exc:
                self.skip(study_uid, label.series_uid, label.kind, str(exc))

    def case(self, label: _Label, ct_uid: str) -> TrainingPair:
        path = case_path(self.cases_dir, ct_uid)

        def pair(reused: bool) -> TrainingPair:
            return TrainingPair(
                study_instance_uid=label.study_uid, ct_series_instance_uid=ct_uid, label_series_instance_uid=label.series_uid,
                label_sop_instance_uid=label.sop_uid, label_kind=label.kind, origin=label.origin,
                frame_of_reference_uid=label.frame_of_reference_uid, case_path=path, reused=reused,
            )

        if path.is_file():
            try:
                info = read_case_info(path)
            except CaseError:
                info = None
            if info and info.label_sop_instance_uid == label.sop_uid and tuple(info.pixdim) == self.pixdim:
                return pair(reused=True)
        try:
            volume = assemble_volume(self.pacs.retrieve_series(label.study_uid, ct_uid))
        except (SeriesRefusedError, PacsError) as exc:
            raise _Skip(f"its CT series {ct_uid} cannot be used: {exc}") from exc
        if volume.frame_of_reference_uid != label.frame_of_reference_uid:
            raise _Skip(
                f"its contours are in frame of reference {label.frame_of_reference_uid or '<none>'} but CT series {ct_uid} "
                f"is in {volume.frame_of_reference_uid}; they were drawn on another acquisition and do not lie on this CT; contour this series, or store the CT they were drawn on"
            )
        left, right = _masks(label, volume)
        try:
            image, labels = case_arrays(volume, left, right, self.pixdim)
        except CaseError as exc:
            raise _Skip(str(exc)) from exc
        info = CaseInfo(
            case_id=ct_uid, study_instance_uid=label.study_uid, ct_series_instance_uid=ct_uid,
            label_series_instance_uid=label.series_uid, label_sop_instance_uid=label.sop_uid, label_kind=label.kind,
            origin=label.origin, pixdim=self.pixdim, shape=image.shape,
        )
        write_case(self.cases_dir, info, image, labels)
        return pair(reused=False)


def label_studies(pacs: DicomwebClient) -> list[str]:
    """Studies that hold an RTSTRUCT or SEG series (QIDO ModalitiesInStudy, PS3.18 10.6)."""
    found: dict[str, None] = {}
    for modality in ("RTSTRUCT", "SEG"):
        for study in pacs.search_studies({"ModalitiesInStudy": modality}):
            found[study.study_instance_uid] = None
    return list(found)


def gather_cases(
    pacs: DicomwebClient,
    fhir: FhirClient,
    cases_dir: Path,
    *,
    study_uids: Iterable[str] | None = None,
    pixdim: Sequence[float] = DEFAULT_PIXDIM,
    progress: Callable[[int, int], None] | None = None,
) -> GatherReport:
    """Write a case for every usable pair in ``study_uids`` (default: every study with a label series).

    A case already on disk for the same label object and pixdim is kept without fetching the CT
    again. The skipped list is saved as ``cases_dir/skipped.json`` for the training error message.

    Raises:
        ServiceUnavailableError: the PACS or the FHIR server is down (nothing is half written).
    """
    gatherer = _Gatherer(pacs, fhir, cases_dir, pixdim)
    studies = list(study_uids) if study_uids is not None else label_studies(pacs)
    for done, study_uid in enumerate(studies, start=1):
        gatherer.study(study_uid)
        if progress is not None:
            progress(done, len(studies))
    write_skipped(cases_dir, gatherer.skipped)
    log.info("training data: %d pairs, %d skipped, %d studies", len(gatherer.pairs), len(gatherer.skipped), len(studies))
    return GatherReport(pairs=gatherer.pairs, skipped=gatherer.skipped, studies_scanned=len(studies))

