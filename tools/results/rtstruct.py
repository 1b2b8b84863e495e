"""RT Structure Set writer (DICOM PS3.3 A.19) built with pydicom, and its reader.

One ROI per segmented structure, CLOSED_PLANAR contours on the CT slices in patient
coordinates (see :mod:`tools.results.contours` for the even-odd hole convention). The
object joins the source study as a new series; its UIDs are derived deterministically
(docs/architecture.md, idempotent writes) and, given a fixed ``created`` time, so are its bytes.

Modules written: Patient (C.7.1.1), General Study (C.7.2.1), Patient Study (C.7.2.2), RT
Series (C.8.8.1), Frame of Reference (C.7.4.1), General Equipment (C.7.5.1), Structure Set
(C.8.8.5), ROI Contour (C.8.8.6), RT ROI Observations (C.8.8.8), Approval (C.8.8.16) and
SOP Common (C.12.1) with the Contributing Equipment Sequence naming the algorithm (IHE AI
Results). Checked with dciodvfy (dicom3tools) in the tests.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from pydicom import Dataset
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import RTStructureSetStorage

from tools.imaging.volume import Volume
from tools.results.common import (
    MANUFACTURER,
    SOFTWARE_VERSION,
    DerivedObject,
    contributing_equipment,
    derived_uid,
    edit_digest,
    encoded,
    new_dataset,
)
from tools.results.contours import SliceContour, contours_to_mask, mask_to_contours
from tools.results.encoding import encoded_element, encoded_item, padded
from tools.segmentation.base import SegmentationResult, StructureMask

__all__ = ["RTStructError", "build_rtstruct", "rtstruct_dataset", "rtstruct_masks"]

logger = logging.getLogger(__name__)

# RT Referenced Study Sequence items name the study by the (retired) Detached Study
# Management SOP Class (PS3.3 C.8.8.5); treatment planning systems still expect it.
_DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
_SERIES_NUMBER = 9001
_STRUCTURE_SET_LABEL = "Auto contours"
_CONTOUR_SEQUENCE = Tag(0x3006, 0x0040)
_CONTOUR_IMAGE_SEQUENCE = Tag(0x3006, 0x0016)
_CONTOUR_DATA = Tag(0x3006, 0x0050)
_CONTOUR_GEOMETRIC_TYPE = Tag(0x3006, 0x0042)
_NUMBER_OF_CONTOUR_POINTS = Tag(0x3006, 0x0046)
_CONTOUR_NUMBER = Tag(0x3006, 0x0048)
_REFERENCED_SOP_CLASS_UID = Tag(0x0008, 0x1150)
_REFERENCED_SOP_INSTANCE_UID = Tag(0x0008, 0x1155)
# Contour coordinates are rounded to 0.1 um: far below any pixel, and every value then fits
# the 16-character DS limit (PS3.5 6.2) with "%.10g".
_COORDINATE_DECIMALS = 4

# Patient (C.7.1.1), Patient Study (C.7.2.2) and General Study (C.7.2.1) attributes copied
# from the source images; the type 2 ones are written empty when the source lacks them.
_COPIED_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_COPIED_OPTIONAL = (
    "IssuerOfPatientID",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyDescription",
)


class RTStructError(ValueError):
    """The inputs cannot make a consistent RT Structure Set; the message names the series."""


def build_rtstruct(
    source: Sequence[Dataset],
    volume: Volume,
    result: SegmentationResult,
    *,
    created: datetime | None = None,
) -> tuple[Dataset, DerivedObject]:
    """:func:`rtstruct_dataset` and the description of its Part 10 bytes (sha256, size)."""
    ds = rtstruct_dataset(source, volume, result, created=created)
    return ds, encoded(ds, "RTSTRUCT")[1]


def rtstruct_dataset(
    source: Sequence[Dataset],
    volume: Volume,
    result: SegmentationResult,
    *,
    created: datetime | None = None,
) -> Dataset:
    """Build the RT Structure Set for ``result`` on the CT series ``volume`` came from.

    Args:
        source: the CT instances' headers (pixel data not needed), in any order; every
            instance of ``volume`` must be among them (matched by SOP Instance UID).
        volume: the assembled series the masks are drawn on.
        result: the engine's masks, one ROI each, numbered in list order from 1.
        created: the time written as Structure Set / Instance Creation date and time;
            fix it to get identical bytes (and sha256) from identical inputs.

    Returns:
        The dataset, with file meta, ready for ``dataset_bytes`` (serialised once by the caller).

    Raises:
        RTStructError: there is no structure, a mask does not match the volume, ROI names
            repeat, or a slice's source instance is missing.
    """
    started = time.perf_counter()
    series_uid = volume.series_instance_uid
    references = _match_sources(source, volume)
    _check_structures(result.structures, volume)
    created = created or datetime.now()
    roi_keys = [s.structure.key for s in result.structures]
    edit = edit_digest(result)
    new_series_uid = derived_uid(
        series_uid, result.engine, result.engine_version, roi_keys, kind="RTSTRUCT", role="series", edit=edit
    )
    sop_uid = derived_uid(
        series_uid, result.engine, result.engine_version, roi_keys, kind="RTSTRUCT", role="instance", edit=edit
    )

    ds = _header(references[0], volume, result, new_series_uid, sop_uid, created)
    ds.ReferencedFrameOfReferenceSequence = [_referenced_frame(volume, references)]
    ds.StructureSetROISequence = []
    ds.ROIContourSequence = []
    ds.RTROIObservationsSequence = []
    contour_count = 0
    for number, structure in enumerate(result.structures, start=1):
        contours = mask_to_contours(structure.mask.astype(bool, copy=False), volume.geometry)
        if not contours:
            logger.warning(
                "RTSTRUCT for series %s: ROI %s is empty; written without contours", series_uid,
                structure.structure.roi_name,
            )
        contour_count += len(contours)
        ds.StructureSetROISequence.append(_structure_set_roi(number, structure, volume, result))
        ds.ROIContourSequence.append(_roi_contour(number, structure, contours, references))
        ds.RTROIObservationsSequence.append(_observation(number, structure))

    # Everything here is already in the file's encoding; saying so lets pydicom write the
    # raw contour items as they are instead of re-checking thousands of them.
    ds.set_original_encoding(False, True, convert_encodings(ds.SpecificCharacterSet))
    logger.info(
        "Built RTSTRUCT %s for series %s: %d ROIs, %d contours in %.2f s",
        sop_uid, series_uid, len(result.structures), contour_count, time.perf_counter() - started,
    )
    return ds


def rtstruct_masks(ds: Dataset, volume: Volume, max_plane_distance_mm: float = 0.05) -> dict[str, np.ndarray]:
    """Rasterise every ROI of an RT Structure Set onto ``volume``'s grid, by ROI Name.

    Contours of a slice are combined with the even-odd rule (holes as inner contours).
    Only CLOSED_PLANAR contours are read; POINT or OPEN contours enclose nothing.

    Raises:
        RTStructError: an ROI is defined in another frame of reference, or a contour lies
            off the volume's slices.
    """
    names: dict[int, str] = {}
    for roi in ds.get("StructureSetROISequence", []):
        frame = str(roi.get("ReferencedFrameOfReferenceUID", ""))
        if frame != volume.frame_of_reference_uid:
            raise RTStructError(
                f"RTSTRUCT {ds.get('SOPInstanceUID', '<no UID>')}: ROI '{roi.get('ROIName', '')}' is in frame of "
                f"reference {frame or '<none>'}, not that of series {volume.series_instance_uid} "
                f"({volume.frame_of_reference_uid}); read it with the series it was drawn on"
            )
        names[int(roi.ROINumber)] = str(roi.get("ROIName", ""))
    masks: dict[str, np.ndarray] = {}
    for roi_contour in ds.get("ROIContourSequence", []):
        number = int(roi_contour.ReferencedROINumber)
        name = names.get(number, f"ROI {number}")
        points = [
            _contour_points(item)
            for item in roi_contour.get("ContourSequence", [])
            if item.get("ContourGeometricType", "") == "CLOSED_PLANAR"
        ]
        try:
            masks[name] = contours_to_mask(points, volume.geometry, max_plane_distance_mm)
        except ValueError as error:
            raise RTStructError(
                f"RTSTRUCT {ds.get('SOPInstanceUID', '<no UID>')}, ROI '{name}' on series "
                f"{volume.series_instance_uid}: {error}"
            ) from error
    return masks


def _match_sources(source: Sequence[Dataset], volume: Volume) -> list[Dataset]:
    """The source header of each slice of ``volume``, in slice order."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source if "SOPInstanceUID" in ds}
    missing = [uid for uid in volume.sop_instance_uids if uid not in by_uid]
    if missing:
        raise RTStructError(
            f"Cannot build an RTSTRUCT for series {volume.series_instance_uid}: {len(missing)} of its "
            f"{len(volume.sop_instance_uids)} instances are not among the {len(source)} source headers "
            f"(e.g. {missing[0]}); pass the headers of the series the volume was assembled from."
        )
    return [by_uid[uid] for uid in volume.sop_instance_uids]


def _check_structures(structures: Sequence[StructureMask], volume: Volume) -> None:
    if not structures:
        # The Structure Set ROI Sequence is type 1 (PS3.3 C.8.8.5): at least one ROI.
        raise RTStructError(
            f"Cannot build an RTSTRUCT for series {volume.series_instance_uid}: the segmentation "
            "result holds no structure; segment at least one target first."
        )
    names = [s.structure.roi_name for s in structures]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RTStructError(
            f"Cannot build an RTSTRUCT for series {volume.series_instance_uid}: ROI name(s) "
            f"{', '.join(repeated)} appear more than once; segment each structure once."
        )
    for structure in structures:
        if tuple(structure.mask.shape) != volume.geometry.shape:
            raise RTStructError(
                f"Cannot build an RTSTRUCT for series {volume.series_instance_uid}: the mask of "
                f"{structure.structure.roi_name} has shape {structure.mask.shape}, the volume "
                f"{volume.geometry.shape}; the engine must return masks on the volume's own grid."
            )


def _header(
    reference: Dataset, volume: Volume, result: SegmentationResult, series_uid: str, sop_uid: str, created: datetime
) -> Dataset:
    date, clock = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    algorithm = f"{result.engine} {result.engine_version}"

    ds = new_dataset(RTStructureSetStorage, sop_uid, date, clock)
    for keyword in _COPIED_TYPE2:
        if keyword in reference:
            ds[keyword] = copy.deepcopy(reference[keyword])
        else:
            setattr(ds, keyword, "")
    for keyword in _COPIED_OPTIONAL:
        if keyword in reference:
            ds[keyword] = copy.deepcopy(reference[keyword])
    ds.StudyInstanceUID = volume.study_instance_uid
    # RT Series
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = _SERIES_NUMBER
    ds.SeriesDate = date
    ds.SeriesTime = clock
    ds.SeriesDescription = f"Auto contours ({algorithm})"[:64]
    ds.OperatorsName = ""
    # Frame of Reference: the contours are in the source's patient coordinate system.
    ds.FrameOfReferenceUID = volume.frame_of_reference_uid
    ds.PositionReferenceIndicator = reference.get("PositionReferenceIndicator", "")
    # General Equipment: this software made the object; the algorithm is named below.
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MANUFACTURER
    ds.SoftwareVersions = SOFTWARE_VERSION
    ds.ContributingEquipmentSequence = [contributing_equipment(result.engine, result.engine_version)]
    # Structure Set
    ds.InstanceNumber = 1
    ds.StructureSetLabel = _STRUCTURE_SET_LABEL
    ds.StructureSetName = algorithm[:64]
    ds.StructureSetDescription = (
        f"Automatic contours by {algorithm} on series {volume.series_instance_uid}; "
        "holes are inner contours (even-odd rule). Review before clinical use."
    )
    ds.StructureSetDate = date
    ds.StructureSetTime = clock
    # Approval: automatic contours are not clinically approved until a person reviews them.
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def _referenced_frame(volume: Volume, references: Sequence[Dataset]) -> Dataset:
    """Referenced Frame of Reference with every CT image of the series (C.8.8.5)."""
    series = Dataset()
    series.SeriesInstanceUID = volume.series_instance_uid
    series.ContourImageSequence = [_image_reference(ds) for ds in references]
    study = Dataset()
    study.ReferencedSOPClassUID = _DETACHED_STUDY_MANAGEMENT
    study.ReferencedSOPInstanceUID = volume.study_instance_uid
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = volume.frame_of_reference_uid
    frame.RTReferencedStudySequence = [study]
    return frame


def _image_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def _structure_set_roi(number: int, structure: StructureMask, volume: Volume, result: SegmentationResult) -> Dataset:
    item = Dataset()
    item.ROINumber = number
    item.ReferencedFrameOfReferenceUID = volume.frame_of_reference_uid
    item.ROIName = structure.structure.roi_name
    item.ROIDescription = structure.structure.display
    # PS3.3 C.8.8.5.3: AUTOMATIC (the algorithm alone), SEMIAUTOMATIC once a reviewer corrected it.
    item.ROIGenerationAlgorithm = "SEMIAUTOMATIC" if result.edit else "AUTOMATIC"
    edited = f", edited by {result.edit.editor_id}" if result.edit else ""
    item.ROIGenerationDescription = f"{result.engine} {result.engine_version}{edited}"[:64]
    return item


def _roi_contour(
    number: int, structure: StructureMask, contours: Sequence[SliceContour], references: Sequence[Dataset]
) -> Dataset:
    item = Dataset()
    item.ReferencedROINumber = number
    item.ROIDisplayColor = list(structure.structure.color_rgb)
    if contours:
        texts = _ds_strings(contours)
        encoded_items = b"".join(
            _contour_item(index, contour, text, references[contour.slice_index])
            for index, (contour, text) in enumerate(zip(contours, texts, strict=True), start=1)
        )
        item[_CONTOUR_SEQUENCE] = RawDataElement(
            _CONTOUR_SEQUENCE, "SQ", len(encoded_items), encoded_items, 0, False, True
        )
        item.set_original_encoding(False, True, default_encoding)
    return item


def _contour_item(number: int, contour: SliceContour, text: bytes, image: Dataset) -> bytes:
    """One Contour Sequence item, encoded (explicit VR little endian, defined lengths).

    Thousands of these make up most of the object: encoding them here, as the bytes pydicom
    would write, and handing pydicom the whole sequence as one raw element, spares it
    building, validating and walking thousands of datasets. Reading the dataset back parses
    the raw sequence like any file's.
    """
    reference = encoded_item(
        encoded_element(_REFERENCED_SOP_CLASS_UID, "UI", _uid_bytes(image.SOPClassUID))
        + encoded_element(_REFERENCED_SOP_INSTANCE_UID, "UI", _uid_bytes(image.SOPInstanceUID))
    )
    return encoded_item(
        encoded_element(_CONTOUR_IMAGE_SEQUENCE, "SQ", reference)
        + encoded_element(_CONTOUR_GEOMETRIC_TYPE, "CS", b"CLOSED_PLANAR ")
        + encoded_element(_NUMBER_OF_CONTOUR_POINTS, "IS", padded(str(len(contour.points)).encode("ascii")))
        + encoded_element(_CONTOUR_NUMBER, "IS", padded(str(number).encode("ascii")))
        + encoded_element(_CONTOUR_DATA, "DS", text)
    )


def _uid_bytes(uid: str) -> bytes:
    return padded(str(uid).encode("ascii"), b"\x00")


def _ds_strings(contours: Sequence[SliceContour]) -> list[bytes]:
    """Each contour's coordinates as one DS multi-value (x\\y\\z\\...), padded to even length."""
    flat = np.round(np.concatenate([c.points for c in contours]).ravel(), _COORDINATE_DECIMALS) + 0.0
    values = [f"{v:.10g}" for v in flat.tolist()]
    texts = []
    start = 0
    for contour in contours:
        stop = start + contour.points.size
        text = "\\".join(values[start:stop]).encode("ascii")
        texts.append(padded(text))
        start = stop
    return texts


def _observation(number: int, structure: StructureMask) -> Dataset:
    spec = structure.structure
    code = Dataset()
    code.CodeValue = spec.snomed_code
    code.CodingSchemeDesignator = "SCT"
    code.CodeMeaning = spec.snomed_meaning
    item = Dataset()
    item.ObservationNumber = number
    item.ReferencedROINumber = number
    item.ROIObservationLabel = spec.roi_name[:16]
    item.RTROIIdentificationCodeSequence = [code]
    item.RTROIInterpretedType = spec.rt_roi_type
    item.ROIInterpreter = ""
    return item


def _contour_points(item: Dataset) -> np.ndarray:
    """Contour Data as (N, 3) floats, parsed straight from the encoded text when still raw."""
    element = item.get_item(_CONTOUR_DATA)
    if element is None:
        return np.empty((0, 3))
    if isinstance(element, RawDataElement):
        text = (element.value or b"").decode("ascii").strip(" \x00")
        values = np.array(text.split("\\"), dtype=float) if text else np.empty(0)
    else:
        value = element.value
        values = np.asarray(value if isinstance(value, Sequence) else [value], dtype=float)
    return values.reshape(-1, 3)
