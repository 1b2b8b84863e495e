"""DICOM Segmentation (binary SEG) of a segmentation result, built with highdicom.

One segment per structure, coded per PS3.3 C.8.20.2 (Segment Description macro):
Segmented Property Category (SCT 91723000 "Anatomical structure") and Type (the
structure's SNOMED CT concept, e.g. 44029006 Left lung), algorithm type AUTOMATIC with
the engine named in the Segmentation Algorithm Identification Sequence (name, version and
its parameters as "name=value,..." sorted by name), and the ROI colour
as Recommended Display CIELab Value. The SEG shares the source Study Instance UID and
Frame of Reference; its Series and SOP Instance UIDs are derived (docs/architecture.md, idempotent
writes). With a fixed ``created`` time the file bytes are reproducible, because the
approval records their sha256 and the writer refuses anything else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DT

from tools.imaging.volume import Volume
from tools.results.common import (
    MANUFACTURER,
    SOFTWARE_VERSION,
    DerivedObject,
    ResultBuildError,
    contributing_equipment,
    derived_uid,
    edit_digest,
    encoded,
)
from tools.results.encoding import freeze_sequence, mark_encoded
from tools.segmentation.base import SegmentationResult, StructureMask

logger = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 9101
# Algorithm Family (CID 7162) per engine. The built-in engine is thresholding plus
# morphology; every other engine in docs/architecture.md (MONAI bundle, MedImageParse) is a learned model.
_ALGORITHM_FAMILIES = {"lung-threshold": codes.cid7162.MorphologicalOperations}
_DEFAULT_ALGORITHM_FAMILY = codes.cid7162.ArtificialIntelligence
# Algorithm Parameters (0066,0032) is one LT value, "name=value" joined by commas by highdicom.
_PARAMETER_NAME = re.compile(r"[a-z][a-z0-9_]*")
_LT_MAX_CHARS = 10240


def ordered_sources(source: Sequence[Dataset], volume: Volume) -> list[Dataset]:
    """The source datasets in volume slice order (``volume.sop_instance_uids[k]`` is slice k).

    highdicom pairs mask frame k with source image k, so the order must be the volume's,
    not the order the files were read in.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source}
    missing = [uid for uid in volume.sop_instance_uids if uid not in by_uid]
    if missing:
        raise ResultBuildError(
            f"Series {volume.series_instance_uid}: {len(missing)} of {len(volume.sop_instance_uids)} slices of the "
            f"volume have no source dataset (e.g. SOP Instance {missing[0]}). Pass the same instances the volume "
            "was assembled from."
        )
    return [by_uid[uid] for uid in volume.sop_instance_uids]


def check_masks(volume: Volume, result: SegmentationResult) -> None:
    """Refuse a result that has no structures or masks off the volume's grid."""
    if not result.structures:
        raise ResultBuildError(
            f"Series {volume.series_instance_uid}: the {result.engine} result holds no structures; "
            "nothing to write. Run the segmentation with at least one target."
        )
    for item in result.structures:
        if item.mask.shape != volume.array.shape:
            raise ResultBuildError(
                f"Series {volume.series_instance_uid}: mask of {item.structure.key} has shape {item.mask.shape}, "
                f"the volume {volume.array.shape}. Engines must return masks on the volume's own grid."
            )


def roi_keys(result: SegmentationResult) -> list[str]:
    return [item.structure.key for item in result.structures]


def segment_tracking_uid(volume: Volume, result: SegmentationResult, structure_key: str) -> str:
    """Tracking UID of one segment, shared by the SEG and the SR that measures it (TID 4108)."""
    return derived_uid(
        volume.series_instance_uid, result.engine, result.engine_version, roi_keys(result), "SEG",
        f"tracking:{structure_key}",
    )


def equipment_item(engine: str, engine_version: str, created: datetime) -> hd.ContributingEquipment:
    """The project's Contributing Equipment item (IHE AI Results) as highdicom wants it."""
    item = contributing_equipment(engine, engine_version)
    return hd.ContributingEquipment(
        manufacturer=item.Manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=item.ManufacturerModelName,
        software_versions=list(item.SoftwareVersions),
        contribution_datetime=created,
        contribution_description=f"Automatic segmentation by {engine} {engine_version}"[:1024],
    )


def sorted_parameters(volume: Volume, parameters: Mapping[str, str]) -> list[tuple[str, str]]:
    """The engine's parameters sorted by name, the one order the SR and the SEG write them in.

    Names are lower-case identifiers, so that "name=value" reads back unambiguously.
    """
    bad = [name for name in parameters if not _PARAMETER_NAME.fullmatch(name)]
    if bad:
        raise ResultBuildError(
            f"Series {volume.series_instance_uid}: algorithm parameter names {bad} are not lower-case identifiers "
            "(a-z, 0-9, _). The engine must name its parameters so; fix the engine."
        )
    return sorted(parameters.items())


def _seg_parameters(volume: Volume, parameters: Mapping[str, str]) -> dict[str, str] | None:
    # The SEG joins the pairs with commas, so a comma inside a value would split it.
    items = {name: value.replace(",", ";") for name, value in sorted_parameters(volume, parameters)}
    text = ",".join(f"{name}={value}" for name, value in items.items())
    if len(text) > _LT_MAX_CHARS:
        raise ResultBuildError(
            f"Series {volume.series_instance_uid}: the engine's parameters take {len(text)} characters, more than "
            f"the SEG's Algorithm Parameters can hold ({_LT_MAX_CHARS}). Shorten them in the engine."
        )
    return items or None


def pin_times(ds: Dataset, created: datetime) -> None:
    """Replace every time highdicom stamped with ``datetime.now()`` by ``created``.

    highdicom sets Instance Creation Date/Time and its own Contributing Equipment item's
    Contribution DateTime to the wall clock; pinning them makes the bytes reproducible.
    """
    ds.InstanceCreationDate = created.strftime("%Y%m%d")
    ds.InstanceCreationTime = created.strftime("%H%M%S")
    for item in ds.get("ContributingEquipmentSequence", []):
        if item.get("ManufacturerModelName") == "highdicom":
            item.ContributionDateTime = DT(created)


def _description(
    number: int, item: StructureMask, tracking_uid: str, result: SegmentationResult, parameters: dict[str, str] | None
) -> hd.seg.SegmentDescription:
    engine, version = result.engine, result.engine_version
    spec = item.structure
    property_type = hd.sr.CodedConcept(value=spec.snomed_code, scheme_designator="SCT", meaning=spec.snomed_meaning)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=spec.roi_name,
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=property_type,
        # A reviewer's correction of the algorithm's output is SEMIAUTOMATIC (PS3.3 C.8.20.2).
        algorithm_type=(
            hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if result.edit else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        ),
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=engine[:64],
            family=_ALGORITHM_FAMILIES.get(engine, _DEFAULT_ALGORITHM_FAMILY),
            version=version[:64],
            parameters=parameters,
        ),
        tracking_uid=tracking_uid,
        tracking_id=spec.display,
        display_color=hd.color.CIELabColor.from_rgb(*spec.color_rgb),
    )


def _pixel_array(result: SegmentationResult) -> np.ndarray:
    """Masks in the label-map layout (value n = segment n) when they are disjoint.

    highdicom's overlap check of the stacked (..., segments) layout costs about a second
    on a 512x512x133 CT; a label map cannot overlap, so it is skipped. Overlapping
    structures keep the stacked layout, which BINARY SEG supports.
    """
    labels = np.zeros(result.structures[0].mask.shape, dtype=np.uint8 if len(result.structures) < 256 else np.uint16)
    for number, item in enumerate(result.structures, start=1):
        mask = item.mask.astype(bool, copy=False)
        if number > 1 and np.logical_and(labels, mask).any():
            return np.stack([entry.mask for entry in result.structures], axis=-1).astype(np.uint8)
        np.copyto(labels, number, where=mask)
    return labels


def _pin_dimension_organization(ds: Dataset, uid: str) -> None:
    # highdicom draws a random Dimension Organization UID; a derived one keeps bytes stable.
    for item in ds.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = uid
    for item in ds.get("DimensionIndexSequence", []):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = uid


def build_seg(
    source: Sequence[Dataset],
    volume: Volume,
    result: SegmentationResult,
    *,
    created: datetime | None = None,
) -> tuple[Dataset, DerivedObject]:
    """:func:`seg_dataset` and the description of its Part 10 bytes (sha256, size)."""
    seg = seg_dataset(source, volume, result, created=created)
    return seg, encoded(seg, "SEG")[1]


def seg_dataset(
    source: Sequence[Dataset],
    volume: Volume,
    result: SegmentationResult,
    *,
    created: datetime | None = None,
) -> Dataset:
    """Build a binary DICOM SEG (PS3.3 A.51) of ``result`` on the source CT series.

    Args:
        source: the CT datasets the volume was assembled from (any order; pixel data not needed).
        volume: the assembled volume; masks in ``result`` lie on its grid.
        result: the engine's structures; segment n is ``result.structures[n - 1]``.
        created: content and instance creation time; fix it for reproducible bytes.

    Returns:
        The SEG dataset, ready for ``dataset_bytes`` (serialised once by the caller).

    Raises:
        ResultBuildError: no structures, a mask off the volume grid, or source datasets
            missing for some slices.
    """
    check_masks(volume, result)
    images = ordered_sources(source, volume)
    created = created or datetime.now()
    keys = roi_keys(result)
    engine, version = result.engine, result.engine_version

    def uid(role: str) -> str:
        return derived_uid(volume.series_instance_uid, engine, version, keys, "SEG", role, edit_digest(result))

    pixels = _pixel_array(result)
    parameters = _seg_parameters(volume, result.parameters)
    descriptions = [
        _description(n, item, segment_tracking_uid(volume, result, item.structure.key), result, parameters)
        for n, item in enumerate(result.structures, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=uid("series"),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=uid("instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=engine[:64],
        software_versions=[f"{engine} {version}"[:64], f"imaging-agent {SOFTWARE_VERSION}"],
        device_serial_number="0",
        content_description=f"Automatic segmentation, {engine} {version}"[:64],
        content_label="AISEG",
        series_description=f"AI segmentation ({engine})"[:64],
        # An all-empty result still gets frames: a SEG without frames is not a valid image.
        omit_empty_frames=bool(pixels.any()),
        contributing_equipment=[equipment_item(engine, version, created)],
        content_date=created.date(),
        content_time=created.time().replace(tzinfo=None),
        series_date=created.date(),
        series_time=created.time().replace(tzinfo=None),
    )
    pin_times(seg, created)
    _pin_dimension_organization(seg, uid("dimension-organization"))
    if "FrameOfReferenceUID" not in seg and "PatientOrientation" in images[0]:
        # A radiograph's SEG has no plane geometry; General Image then needs the image's Patient Orientation.
        seg.PatientOrientation = images[0].PatientOrientation
    # One item per frame: most of pydicom's writing time, so encoded at once (tools/results/encoding.py).
    if freeze_sequence(seg, "PerFrameFunctionalGroupsSequence"):
        mark_encoded(seg)
    logger.info(
        "Built SEG %s for series %s: %d segments, %d frames",
        seg.SOPInstanceUID, volume.series_instance_uid, len(descriptions), int(seg.NumberOfFrames),
    )
    return seg
