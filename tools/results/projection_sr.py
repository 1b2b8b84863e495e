"""The measurement report (TID 1500) of structures segmented on a projection radiograph.

Like tools/results/sr.py for CT, but a radiograph's structures are planar: one Planar ROI
Measurements group (TID 1410) per structure, its projected area (SCT 42798000 "Area", UCUM
mm2), the SEG frame it was measured on (Referenced Segmentation Frame: the SEG's segment and
frame, and the radiograph it was derived from), the segment's Tracking Identifier/UID, the
structure as finding and finding site and the engine as algorithm (TID 4019). With the heart and
both lungs the heart's group also holds the cardiothoracic ratio (transverse diameters,
tools/segmentation/projection_qa.py) under a local code: LOINC's cardiothoracic ratios in
DICOM's tables are of areas and circumferences, not of diameters. The local scheme is declared
in the Coding Scheme Identification Sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes

from tools.imaging.volume import Volume
from tools.results.common import MANUFACTURER, ResultBuildError
from tools.results.seg import check_masks, ordered_sources, sorted_parameters
from tools.results.sr import _segments_by_code, device_uid, measurement_sr
from tools.segmentation.base import SegmentationResult, StructureMask
from tools.segmentation.projection_qa import cardiothoracic_ratio

logger = logging.getLogger(__name__)

SCHEME = "99IMAGINGAGENT"
SQUARE_MILLIMETRE = hd.sr.CodedConcept(value="mm2", scheme_designator="UCUM", meaning="square millimeter")
NO_UNITS = hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")
CTR_CODE = hd.sr.CodedConcept(value="CTR-DIAMETER", scheme_designator=SCHEME, meaning="Cardiothoracic ratio (transverse diameters)")
PLAIN_CHEST_XRAY = hd.sr.CodedConcept(value="399208008", scheme_designator="SCT", meaning="Plain chest X-ray")


def _frames(result: SegmentationResult) -> dict[str, int]:
    """Frame number of each non-empty structure's SEG frame: the SEG of one image leaves empty frames out."""
    present = [item.structure.key for item in result.structures if np.any(item.mask)]
    return {key: number for number, key in enumerate(present, start=1)}


def _group(
    item: StructureMask,
    segment: tuple[int, str],
    frame: int,
    seg: Dataset,
    image: Dataset,
    algorithm: hd.sr.AlgorithmIdentification,
    ctr: float | None,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    spec = item.structure
    number, tracking_uid = segment
    structure = hd.sr.CodedConcept(value=spec.snomed_code, scheme_designator="SCT", meaning=spec.snomed_meaning)
    area = item.measurements.area_mm2 if item.measurements else None
    if area is None:
        raise ResultBuildError(
            f"Series {image.SeriesInstanceUID}: {spec.display} has no area; measure the radiograph's result "
            "(tools/segmentation/projection_qa.py) before building its SR."
        )
    measurements = [hd.sr.Measurement(name=codes.SCT.Area, value=round(area, 1), unit=SQUARE_MILLIMETRE)]
    if ctr is not None:
        measurements.append(hd.sr.Measurement(name=CTR_CODE, value=ctr, unit=NO_UNITS))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid or None, identifier=spec.display),
        referenced_segment=hd.sr.ReferencedSegmentationFrame(
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            frame_number=frame,
            segment_number=number,
            source_image=hd.sr.SourceImageForSegmentation.from_source_image(image),
        ),
        finding_type=structure,
        finding_category=codes.SCT.AnatomicalStructure,
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=structure)],
        measurements=measurements,
    )


def _frame_references_only(item: Dataset) -> None:
    """Drop Referenced Segment Number where a Referenced Frame Number is given.

    highdicom writes both in a Referenced Segmentation Frame; PS3.3's Image SOP Instance Reference
    macro (C.10-3) forbids the segment number beside a frame number (dciodvfy reports it), and
    in a SEG the frame names its one segment already.
    """
    for reference in item.get("ReferencedSOPSequence", []):
        if "ReferencedFrameNumber" in reference and "ReferencedSegmentNumber" in reference:
            del reference.ReferencedSegmentNumber
    for child in item.get("ContentSequence", []):
        _frame_references_only(child)


def projection_sr_dataset(
    source: Sequence[Dataset],
    volume: Volume,
    result: SegmentationResult,
    seg: Dataset,
    *,
    created: datetime | None = None,
) -> Dataset:
    """A Comprehensive 3D SR (PS3.3 A.35.13) holding the TID 1500 report of a radiograph's structures.

    Raises:
        ResultBuildError: a structure was not measured, or the SEG is of another image or lacks it.
    """
    check_masks(volume, result)
    [image] = ordered_sources(source, volume)
    segments = _segments_by_code(seg, volume)
    frames = _frames(result)
    created = created or datetime.now()
    engine, version = result.engine, result.engine_version
    parameters = [f"{name}={value}" for name, value in sorted_parameters(volume, result.parameters)]
    algorithm = hd.sr.AlgorithmIdentification(
        name=engine[:64], version=version[:64], parameters=parameters or None, manufacturer=MANUFACTURER
    )
    ctr = cardiothoracic_ratio(volume, result)
    groups = []
    for item in result.structures:
        spec = item.structure
        if spec.key not in frames:
            continue  # an empty mask has no SEG frame to point at; its QA flag tells the reviewer
        if spec.snomed_code not in segments:
            raise ResultBuildError(
                f"Series {volume.series_instance_uid}: SEG {seg.SOPInstanceUID} has no segment for {spec.display}. "
                "Build the SEG and the SR from the same result."
            )
        ratio = ctr.ratio if ctr is not None and spec.key == "heart" else None
        groups.append(_group(item, segments[spec.snomed_code], frames[spec.key], seg, image, algorithm, ratio))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(engine, version), name=engine[:64], manufacturer_name=MANUFACTURER,
            model_name=f"{engine} {version}"[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PLAIN_CHEST_XRAY,
        imaging_measurements=groups,
    )

    sr = measurement_sr([image, seg], report, volume, result, created, f"AI radiograph measurements ({engine})")
    _frame_references_only(sr)
    if ctr is not None:
        scheme = Dataset()
        scheme.CodingSchemeDesignator = SCHEME
        scheme.CodingSchemeName = "imaging-agent measurement codes"
        scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
        sr.CodingSchemeIdentificationSequence = [scheme]
    logger.info("Built radiograph SR %s for series %s: %d groups", sr.SOPInstanceUID, volume.series_instance_uid, len(groups))
    return sr
