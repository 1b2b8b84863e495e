"""Pair a label object with the CT series it was drawn on, and save the pair as a case.

A label is paired with the CT series it references (RTSTRUCT: Referenced Frame of Reference >
RT Referenced Series and the Contour Image Sequences; SEG: Referenced Series Sequence), which
must hold every referenced SOP Instance and share the label's Frame of Reference UID. One case
per CT series: a human-made object beats an agent one, a SEG (voxel exact) beats an RTSTRUCT,
and a newer object an older one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from tools.dicomweb.client import DicomwebClient, PacsError
from tools.ids import UnsafeIdentifierError, check_dicom_uid
from tools.imaging.volume import SeriesRefusedError, assemble_volume
from tools.training.dataset import CaseError, CaseInfo, Origin, case_arrays, case_path, read_case_info, write_case
from tools.training.labels import LabelKind, LabelObject, SkipLabel, label_masks


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


def by_preference(labels: Sequence[LabelObject]) -> list[LabelObject]:
    """Human-made first, SEG (voxel exact) before RTSTRUCT, newest first (sorts are stable)."""
    newest_first = sorted(labels, key=lambda label: label.created, reverse=True)
    return sorted(newest_first, key=lambda label: (label.origin != "human-made", label.kind != "SEG"))


def ct_series(pacs: DicomwebClient, label: LabelObject, ct_uids: Sequence[str]) -> str:
    """The CT series holding every instance the label references."""
    if label.referenced_series:
        candidates = [uid for uid in ct_uids if uid in label.referenced_series]
        if not candidates:
            raise SkipLabel(
                f"it references series {', '.join(sorted(label.referenced_series))}, which is not a CT series of this "
                "study in the PACS; store that CT series, then gather again"
            )
    else:
        candidates = list(ct_uids)
    if not label.referenced_sops:
        raise SkipLabel("it references no CT image (no Contour Image / Referenced Instance Sequence), so it cannot be paired")
    best: tuple[int, str, set[str]] | None = None
    for uid in candidates:
        present = {i.sop_instance_uid for i in pacs.search_instances(label.study_uid, uid)}
        missing = label.referenced_sops - present
        if best is None or len(missing) < best[0]:
            best = (len(missing), uid, missing)
    if best is None:
        raise SkipLabel("the study holds no CT series to pair it with")
    count, uid, missing = best
    if count:
        raise SkipLabel(
            f"{count} of the {len(label.referenced_sops)} CT instances it references are missing from CT series {uid} "
            f"in the PACS (e.g. {sorted(missing)[0]}); store the complete series, then gather again"
        )
    return uid


def pair_case(
    pacs: DicomwebClient, label: LabelObject, ct_uid: str, cases_dir: Path, pixdim: tuple[float, ...]
) -> TrainingPair:
    """Write the case of ``label`` on CT series ``ct_uid`` at ``pixdim`` mm, or keep the one on disk.

    A case already written from the same label object at the same pixdim is kept without
    fetching the CT again.

    Raises:
        SkipLabel: the CT cannot be used, lies in another frame of reference, or the masks do
            not make a case.
    """
    try:
        # The UID names a file: one the PACS listed could otherwise point outside cases_dir.
        path = case_path(cases_dir, check_dicom_uid(ct_uid, f"the CT Series Instance UID paired with label {label.sop_uid}"))
    except UnsafeIdentifierError as exc:
        raise SkipLabel(str(exc)) from exc

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
        if info and info.label_sop_instance_uid == label.sop_uid and tuple(info.pixdim) == pixdim:
            return pair(reused=True)
    try:
        volume = assemble_volume(pacs.retrieve_series(label.study_uid, ct_uid))
    except (SeriesRefusedError, PacsError) as exc:
        raise SkipLabel(f"its CT series {ct_uid} cannot be used: {exc}") from exc
    if volume.frame_of_reference_uid != label.frame_of_reference_uid:
        raise SkipLabel(
            f"its contours are in frame of reference {label.frame_of_reference_uid or '<none>'} but CT series {ct_uid} "
            f"is in {volume.frame_of_reference_uid}; they were drawn on another acquisition and do not lie on this CT; contour this series, or store the CT they were drawn on"
        )
    left, right = label_masks(label, volume)
    try:
        image, labels = case_arrays(volume, left, right, pixdim)
    except CaseError as exc:
        raise SkipLabel(str(exc)) from exc
    info = CaseInfo(
        case_id=ct_uid, study_instance_uid=label.study_uid, ct_series_instance_uid=ct_uid,
        label_series_instance_uid=label.series_uid, label_sop_instance_uid=label.sop_uid, label_kind=label.kind,
        origin=label.origin, pixdim=pixdim, shape=image.shape,
    )
    write_case(cases_dir, info, image, labels)
    return pair(reused=False)
