"""Secondary-capture overlay series: the structures' outlines burned into copies of a few CT slices.

For PACS viewers that cannot show SEG or RTSTRUCT (users ask for this: MONAI Label #1621). The
images are the three axial previews (tools/results/previews.py: lung window, radiological view,
outlines in each structure's colour, a legend) under a red band that says NOT FOR DIAGNOSIS;
the header says it too (Series Description, Image Comments, Burned In Annotation YES, Derivation
Description). Secondary Capture Image Storage (PS3.3 A.8.1), RGB, in the source study, each image
naming the CT slice it was cut from. Resampled for display: not for measurement (no Pixel Spacing).
UIDs are derived and every time is ``created``, so the same result gives the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from tools.imaging.volume import Volume
from tools.results.common import MANUFACTURER, derived_uid, edit_digest
from tools.results.previews import AxialPreview, axial_previews
from tools.results.seg import check_masks, equipment_item, ordered_sources, pin_times, roi_keys
from tools.segmentation.base import SegmentationResult

logger = logging.getLogger(__name__)

OVERLAY_SERIES_NUMBER = 9104
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSIS"
_BANNER_PX = 30
_BANNER_RGB = (170, 0, 0)
_FONT_PX = 18


def _with_banner(preview: Image.Image, engine: str) -> np.ndarray:
    """The preview under a red band reading NOT FOR DIAGNOSIS, as an RGB array."""
    width, height = preview.size
    canvas = Image.new("RGB", (width, height + _BANNER_PX), _BANNER_RGB)
    canvas.paste(preview, (0, _BANNER_PX))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=_FONT_PX)
    text = f"{NOT_FOR_DIAGNOSIS} - AI contours ({engine})"
    draw.text((width / 2, _BANNER_PX / 2), text, anchor="mm", font=font, fill=(255, 255, 255))
    return np.asarray(canvas, dtype=np.uint8)


def _source_reference(image: Dataset) -> Dataset:
    purpose = hd.sr.CodedConcept(value="121322", scheme_designator="DCM", meaning="Source image for image processing operation")
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def _overlay_image(
    preview: AxialPreview, number: int, images: list[Dataset], volume: Volume, result: SegmentationResult,
    created: datetime,
) -> Dataset:
    engine, version = result.engine, result.engine_version
    keys = roi_keys(result)
    source = images[preview.index] if preview.source_slice else None

    def uid(role: str) -> str:
        return derived_uid(volume.series_instance_uid, engine, version, keys, "SC", role, edit_digest(result))

    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source if source is not None else images[0],
        pixel_array=_with_banner(preview.image, engine),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=uid("series"),
        series_number=OVERLAY_SERIES_NUMBER,
        sop_instance_uid=uid(f"instance:{number}"),
        instance_number=number,
        manufacturer=MANUFACTURER,
        # Radiological view (tools/results/previews.py): rows run to the patient's left, columns to posterior.
        patient_orientation=("L", "P"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[equipment_item(engine, version, created)],
        series_description=f"AI contours {NOT_FOR_DIAGNOSIS}"[:64],
        manufacturer_model_name=engine[:64],
        content_date=created.date(),
        content_time=created.time().replace(tzinfo=None),
        series_date=created.date(),
        series_time=created.time().replace(tzinfo=None),
    )
    sc.BurnedInAnnotation = "YES"
    # The chest is no paired body part: Image Laterality U, so that Laterality (Type 2C) is not needed.
    sc.ImageLaterality = "U"
    sc.ImageComments = (
        f"{NOT_FOR_DIAGNOSIS}. Outlines of the automatic segmentation by {engine} {version} drawn on a CT "
        "slice resampled for display; use the SEG or RTSTRUCT of this study for review and measurement."
    )
    sc.DerivationDescription = f"{engine} {version} outlines burned into a display copy of the CT slice"[:1024]
    if source is not None:
        sc.SourceImageSequence = [_source_reference(source)]
    sc.DateOfSecondaryCapture = created.strftime("%Y%m%d")
    sc.TimeOfSecondaryCapture = created.strftime("%H%M%S")
    pin_times(sc, created)
    return sc


def overlay_datasets(
    source: Sequence[Dataset], volume: Volume, result: SegmentationResult, *, created: datetime | None = None
) -> list[Dataset]:
    """One Secondary Capture image per axial preview (top to bottom), in one series of the source study."""
    check_masks(volume, result)
    images = ordered_sources(source, volume)
    created = created or datetime.now()
    overlays = [
        _overlay_image(preview, number, images, volume, result, created)
        for number, preview in enumerate(axial_previews(volume, result), start=1)
    ]
    logger.info("Built %d overlay images for series %s", len(overlays), volume.series_instance_uid)
    return overlays
