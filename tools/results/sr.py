"""Comprehensive 3D SR measurement report (TID 1500) of structure volumes, built with highdicom.

One Volumetric ROI Measurements group (TID 1411) per structure: its volume in millilitres
(SCT 118565006 "Volume", UCUM "ml"), the SEG segment it was measured on (Referenced
Segment, DCM 121191), the segment's Tracking Identifier/UID (TID 4108, the same UID as the
SEG's Tracking UID), the structure as finding and finding site (SNOMED CT) and the engine
as algorithm (TID 4019: name, version, manufacturer and one "name=value" Algorithm Parameters
item per engine parameter, sorted by name). The observer is the engine as a device (TID 1004). UIDs are
derived (docs/architecture.md, idempotent writes); a fixed ``created`` time gives reproducible bytes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage, generate_uid

from tools.imaging.volume import Volume
from tools.results.common import MANUFACTURER, DerivedObject, derived_uid, edit_digest, encoded
from tools.results.seg import (
    ResultBuildError,
    check_masks,
    equipment_item,
    ordered_sources,
    pin_times,
    roi_keys,
    sorted_parameters,
)
from tools.segmentation.base import SegmentationResult, StructureSpec

logger = logging.getLogger(__name__)

SR_SERIES_NUMBER = 9102
MILLILITRE = hd.sr.CodedConcept(value="ml", scheme_designator="UCUM", meaning="milliliter")


def device_uid(engine: str, engine_version: str) -> str:
    """Device Observer UID (TID 1004) of an engine version: the same for every study it reads."""
    return str(generate_uid(entropy_srcs=["imaging-agent device observer", engine, engine_version]))


def measurement_sr(
    evidence: Sequence[Dataset],
    report: hd.sr.MeasurementReport,
    volume: Volume,
    result: SegmentationResult,
    created: datetime,
    description: str,
) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR around `report` with the result's derived UIDs, equipment and times.

    Unverified and preliminary: a radiologist approves it before it is stored. Shared by the CT's
    volumes and the radiograph's areas (tools/results/projection_sr.py).
    """
    engine, version = result.engine, result.engine_version

    def uid(role: str) -> str:
        return derived_uid(
            volume.series_instance_uid, engine, version, roi_keys(result), "SR", role, edit_digest(result)
        )

    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=report,
        series_instance_uid=uid("series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uid("instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        contributing_equipment=[equipment_item(engine, version, created)],
        series_description=description[:64],
        content_date=created.date(),
        content_time=created.time().replace(tzinfo=None),
        series_date=created.date(),
        series_time=created.time().replace(tzinfo=None),
    )
    pin_times(sr, created)
    return sr


def _segments_by_code(seg: Dataset, volume: Volume) -> dict[str, tuple[int, str]]:
    """SNOMED code -> (Segment Number, Tracking UID) of each segment in ``seg``."""
    if str(seg.get("SOPClassUID", "")) != SegmentationStorage:
        raise ResultBuildError(
            f"Series {volume.series_instance_uid}: the dataset passed as SEG ({seg.get('SOPInstanceUID', 'no UID')}) "
            "is not a Segmentation. Pass the SEG built by build_seg for this result."
        )
    referenced = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    if volume.series_instance_uid not in referenced:
        raise ResultBuildError(
            f"Series {volume.series_instance_uid}: SEG {seg.SOPInstanceUID} was built on series "
            f"{', '.join(sorted(referenced)) or 'none'}. Pass the SEG built from this volume."
        )
    segments: dict[str, tuple[int, str]] = {}
    for item in seg.SegmentSequence:
        code = str(item.SegmentedPropertyTypeCodeSequence[0].CodeValue)
        segments[code] = (int(item.SegmentNumber), str(item.get("TrackingUID", "")))
    return segments


def _checked_volumes(
    volume: Volume, result: SegmentationResult, measurements: Mapping[str, float]
) -> dict[str, float]:
    keys = roi_keys(result)
    missing = [key for key in keys if key not in measurements]
    extra = [key for key in measurements if key not in keys]
    if missing or extra:
        raise ResultBuildError(
            f"Series {volume.series_instance_uid}: volumes given for {sorted(measurements)} but the result holds "
            f"{keys} (missing: {missing or 'none'}, unknown: {extra or 'none'}). "
            "Measure exactly the result's structures."
        )
    bad = {key: value for key, value in measurements.items() if not math.isfinite(value) or value < 0}
    if bad:
        raise ResultBuildError(
            f"Series {volume.series_instance_uid}: volumes must be finite and non-negative millilitres, got {bad}. "
            "Recompute the measurements."
        )
    return {key: float(measurements[key]) for key in keys}


def _group(
    spec: StructureSpec,
    volume_ml: float,
    segment: tuple[int, str],
    seg: Dataset,
    volume: Volume,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    number, tracking_uid = segment
    structure = hd.sr.CodedConcept(value=spec.snomed_code, scheme_designator="SCT", meaning=spec.snomed_meaning)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid or None, identifier=spec.display),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(volume.series_instance_uid),
        ),
        finding_type=structure,
        finding_category=codes.SCT.AnatomicalStructure,
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=structure)],
        measurements=[hd.sr.Measurement(name=codes.SCT.Volume, value=round(volume_ml, 3), unit=MILLILITRE)],
    )


def build_sr(
    source: Sequence[Dataset],
    volume: Volume,
    result: SegmentationResult,
    seg: Dataset,
    measurements: Mapping[str, float],
    *,
    created: datetime | None = None,
) -> tuple[Dataset, DerivedObject]:
    """:func:`sr_dataset` and the description of its Part 10 bytes (sha256, size)."""
    sr = sr_dataset(source, volume, result, seg, measurements, created=created)
    return sr, encoded(sr, "SR")[1]


def sr_dataset(
    source: Sequence[Dataset],
    volume: Volume,
    result: SegmentationResult,
    seg: Dataset,
    measurements: Mapping[str, float],
    *,
    created: datetime | None = None,
) -> Dataset:
    """Build a Comprehensive 3D SR (PS3.3 A.35.13) holding a TID 1500 Measurement Report.

    Args:
        source: the CT datasets the volume was assembled from (pixel data not needed).
        volume: the assembled volume.
        result: the segmentation result the SEG was built from.
        seg: the SEG built by :func:`tools.results.seg.seg_dataset` for this result.
        measurements: structure key -> volume in millilitres, one per structure of ``result``.
        created: content and instance creation time; fix it for reproducible bytes.

    Raises:
        ResultBuildError: the measurements do not match the result's structures, the SEG
            was built on another series or lacks a structure, or source datasets are missing.
    """
    check_masks(volume, result)
    images = ordered_sources(source, volume)
    volumes_ml = _checked_volumes(volume, result, measurements)
    segments = _segments_by_code(seg, volume)
    created = created or datetime.now()
    engine, version = result.engine, result.engine_version

    parameters = [f"{name}={value}" for name, value in sorted_parameters(volume, result.parameters)]
    algorithm = hd.sr.AlgorithmIdentification(
        name=engine[:64], version=version[:64], parameters=parameters or None, manufacturer=MANUFACTURER
    )
    groups = []
    for item in result.structures:
        spec = item.structure
        if spec.snomed_code not in segments:
            raise ResultBuildError(
                f"Series {volume.series_instance_uid}: SEG {seg.SOPInstanceUID} has no segment for {spec.display} "
                f"(SCT {spec.snomed_code}). Build the SEG and the SR from the same result."
            )
        groups.append(_group(spec, volumes_ml[spec.key], segments[spec.snomed_code], seg, volume, algorithm))

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(engine, version),
            name=engine[:64],
            manufacturer_name=MANUFACTURER,
            model_name=f"{engine} {version}"[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )

    # The CT first: highdicom copies patient/study and acquisition equipment from evidence[0].
    sr = measurement_sr([*images, seg], report, volume, result, created, f"AI structure volumes ({engine})")
    logger.info(
        "Built SR %s for series %s referencing SEG %s: %d measurement groups",
        sr.SOPInstanceUID, volume.series_instance_uid, seg.SOPInstanceUID, len(groups),
    )
    return sr
