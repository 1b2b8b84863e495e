"""Label objects as read from the PACS: which lungs they hold, what they reference, their masks.

Two kinds are read: RTSTRUCT (PS3.3 A.19) and SEG (PS3.3 A.51). A lung is recognised by its
SNOMED CT code, else by a plain name (`lung_key`); the CT a label references is read from the
RTSTRUCT's Referenced Frame of Reference > RT Referenced Series and Contour Image Sequences, or
the SEG's Referenced Series Sequence, for pairing (`tools.training.pairing`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import highdicom as hd
import numpy as np
from pydicom import Dataset

from tools.imaging.volume import Volume
from tools.results.rtstruct import RTStructError, rtstruct_masks
from tools.segmentation.base import STRUCTURES
from tools.training.dataset import Origin

LabelKind = Literal["RTSTRUCT", "SEG"]
LUNG_KEYS = ("left-lung", "right-lung")
_SIDE_WORDS = {"left-lung": {"left", "l", "lt"}, "right-lung": {"right", "r", "rt"}}


class SkipLabel(Exception):
    """This label object cannot be used; the message is the reason, reported to a person."""


@dataclass
class LabelObject:
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
        if code and code == spec.snomed_code and key in LUNG_KEYS:
            return key
    words = re.findall(r"[a-z]+", name.lower())
    if "lung" not in words:
        return None
    others = set(words) - {"lung"}
    for key, side in _SIDE_WORDS.items():
        if others and others <= side:
            return key
    return None


def _rtstruct_label(ds: Dataset, study_uid: str, series_uid: str) -> LabelObject:
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
    label = LabelObject(ds, "RTSTRUCT", study_uid, series_uid, str(ds.SOPInstanceUID), lungs, "")
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
        raise SkipLabel(f"its lung ROIs are in {len(frames)} different frames of reference ({', '.join(sorted(frames))})")
    label.frame_of_reference_uid = next(iter(frames), "")
    return label


def _seg_label(ds: Dataset, study_uid: str, series_uid: str) -> LabelObject:
    lungs: dict[str, tuple[int, str, str]] = {}
    for segment in ds.get("SegmentSequence", []):
        codes = segment.get("SegmentedPropertyTypeCodeSequence") or []
        key = lung_key(str(segment.get("SegmentLabel", "")), str(codes[0].get("CodeValue", "")) if codes else None)
        if key is not None and key not in lungs:
            lungs[key] = (int(segment.SegmentNumber), str(segment.get("SegmentLabel", "")), str(segment.get("SegmentAlgorithmType", "")).upper())
    label = LabelObject(ds, "SEG", study_uid, series_uid, str(ds.SOPInstanceUID), lungs, str(ds.get("FrameOfReferenceUID", "")))
    for series in ds.get("ReferencedSeriesSequence", []):
        label.referenced_series.add(str(series.SeriesInstanceUID))
        label.referenced_sops.update(str(i.ReferencedSOPInstanceUID) for i in series.get("ReferencedInstanceSequence", []))
    return label


def read_label(ds: Dataset, kind: LabelKind, study_uid: str, series_uid: str) -> LabelObject:
    """The lungs and references of one RTSTRUCT or SEG instance.

    Raises:
        SkipLabel: an RTSTRUCT whose lung ROIs lie in different frames of reference.
    """
    reader = _rtstruct_label if kind == "RTSTRUCT" else _seg_label
    return reader(ds, study_uid, series_uid)


def label_masks(label: LabelObject, volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) lung masks on the CT's own grid; each must hold a voxel."""
    if label.kind == "RTSTRUCT":
        try:
            masks = rtstruct_masks(label.ds, volume)
        except RTStructError as exc:
            raise SkipLabel(str(exc)) from exc
        left, right = (masks[label.lungs[key][1]] for key in LUNG_KEYS)
    else:
        numbers = [label.lungs[key][0] for key in LUNG_KEYS]
        try:
            pixels = hd.seg.Segmentation.from_dataset(label.ds, copy=False).get_pixels_by_source_instance(
                volume.sop_instance_uids, segment_numbers=numbers, assert_missing_frames_are_empty=True
            )
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise SkipLabel(f"its segments cannot be read onto CT series {volume.series_instance_uid}: {exc}") from exc
        left, right = pixels[..., 0].astype(bool), pixels[..., 1].astype(bool)
    for key, mask in zip(LUNG_KEYS, (left, right), strict=True):
        if not mask.any():
            raise SkipLabel(f"ROI '{label.lungs[key][1]}' has no voxel on CT series {volume.series_instance_uid}")
    return left, right
