"""A model's draft findings on a chest radiograph as a Comprehensive SR, each finding with its boxes.

The document is a diagnostic imaging report (LOINC 18748-4, the root of DICOM TID 2000) under
the drafting model as a device observer (TID 1004): a Findings section (LOINC 59776-5) with one
Finding text item (DCM 121071) per sentence, and under a grounded finding one Image Region
(DCM 111030) per box — a closed POLYLINE SCOORD around the box's pixels (PS3.3 C.18.6: (0, 0) is
the top left corner of the top left pixel) selected from the frontal image. It is built before
approval (its sha256 is on the card) and stored only after, preliminary and unverified: it is the
model's text as the model wrote it. Who approved it is in the assessment record and in the FHIR
DiagnosticReport, which says the findings were AI-drafted.
"""

from __future__ import annotations

import logging
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from tools.reporting.models import Box, DraftReport
from tools.results.common import MANUFACTURER, SOFTWARE_VERSION, ResultBuildError
from tools.results.seg import pin_times

logger = logging.getLogger(__name__)

DRAFT_SR_SERIES_NUMBER = 9105
REPORT = hd.sr.CodedConcept(value="18748-4", scheme_designator="LN", meaning="Diagnostic imaging report")
FINDINGS = hd.sr.CodedConcept(value="59776-5", scheme_designator="LN", meaning="Findings")
FINDING = hd.sr.CodedConcept(value="121071", scheme_designator="DCM", meaning="Finding")
IMAGE_REGION = hd.sr.CodedConcept(value="111030", scheme_designator="DCM", meaning="Image Region")
SOURCE = hd.sr.CodedConcept(value="260753009", scheme_designator="SCT", meaning="Source")


def draft_uid(frontal_series_uid: str, draft: DraftReport, role: str) -> str:
    """UIDs fixed by the source series, the model and what it drafted: the same draft, the same object."""
    return str(generate_uid(entropy_srcs=[frontal_series_uid, draft.model, draft.model_version, draft.text(), role]))


def _outline(box: Box) -> np.ndarray:
    left, top, right, bottom = box.column_min, box.row_min, box.column_max + 1, box.row_max + 1
    return np.array([[left, top], [right, top], [right, bottom], [left, bottom], [left, top]], dtype=float)


def draft_sr_dataset(frontal: Dataset, draft: DraftReport, *, created: datetime | None = None) -> Dataset:
    """The Comprehensive SR of `draft` on the frontal radiograph `frontal` (pixel data not needed).

    Raises:
        ResultBuildError: `frontal` is not the image the draft was made on.
    """
    if str(frontal.SOPInstanceUID) != draft.frontal_sop_instance_uid:
        raise ResultBuildError(
            f"the draft was made on image {draft.frontal_sop_instance_uid}, not {frontal.SOPInstanceUID}; build the "
            "draft's SR on the frontal image it was drafted from."
        )
    created = created or datetime.now()
    series_uid = str(frontal.SeriesInstanceUID)
    observer = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=draft_uid(series_uid, draft, "device"), name=draft.model[:64], manufacturer_name="Microsoft",
                model_name=f"{draft.model} {draft.model_version}"[:64],
            ),
        )
    )
    items = []
    for finding in draft.findings:
        text = hd.sr.TextContentItem(
            name=FINDING, value=finding.text[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
        regions = []
        for box in finding.boxes:
            region = hd.sr.ScoordContentItem(
                name=IMAGE_REGION,
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=_outline(box),
                pixel_origin_interpretation=hd.sr.PixelOriginInterpretationValues.VOLUME,
                relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
            )
            region.ContentSequence = hd.sr.ContentSequence([
                hd.sr.ImageContentItem(
                    name=SOURCE,
                    referenced_sop_class_uid=str(frontal.SOPClassUID),
                    referenced_sop_instance_uid=str(frontal.SOPInstanceUID),
                    relationship_type=hd.sr.RelationshipTypeValues.SELECTED_FROM,
                )
            ])
            regions.append(region)
        if regions:
            text.ContentSequence = hd.sr.ContentSequence(regions)
        items.append(text)
    section = hd.sr.ContainerContentItem(name=FINDINGS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    section.ContentSequence = hd.sr.ContentSequence(items)
    root = hd.sr.ContainerContentItem(name=REPORT, template_id="2000")
    root.ContentSequence = hd.sr.ContentSequence([*observer, section])
    sr = hd.sr.ComprehensiveSR(
        evidence=[frontal],
        content=root,
        series_instance_uid=draft_uid(series_uid, draft, "series"),
        series_number=DRAFT_SR_SERIES_NUMBER,
        sop_instance_uid=draft_uid(series_uid, draft, "instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=f"AI-drafted findings ({draft.model})"[:64],
        content_date=created.date(),
        content_time=created.time().replace(tzinfo=None),
        series_date=created.date(),
        series_time=created.time().replace(tzinfo=None),
    )
    pin_times(sr, created)
    sr.SoftwareVersions = [f"{draft.model} {draft.model_version}"[:64], f"imaging-agent {SOFTWARE_VERSION}"]
    logger.info("Built draft SR %s on image %s: %d findings", sr.SOPInstanceUID, frontal.SOPInstanceUID, len(items))
    return sr
