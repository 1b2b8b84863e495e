"""Key Object Selection document (PS3.3 A.35.4, TID 2010) pointing at a job's results.

IHE AI Results lets a result generator flag its outputs for the reading workstation with a KOS in
the study. Title (DCM 113000, "Of Interest") from CID 7010; the engine as device observer; a Key
Object Description naming the engine and that the objects are AI results; one reference per
object (SEG and overlay images as IMAGE items, RTSTRUCT and SR as COMPOSITE). Built with the
results, before the approval, so its bytes are approved and stored with theirs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

from tools.imaging.volume import Volume
from tools.results.common import MANUFACTURER, derived_uid, edit_digest
from tools.results.seg import ResultBuildError, equipment_item, pin_times, roi_keys
from tools.results.sr import device_uid
from tools.segmentation.base import SegmentationResult

logger = logging.getLogger(__name__)

KO_SERIES_NUMBER = 9103


def ko_dataset(
    results: Sequence[Dataset], volume: Volume, result: SegmentationResult, *, created: datetime | None = None
) -> Dataset:
    """A Key Object Selection document referencing every object in ``results`` (all of the source study)."""
    if not results:
        raise ResultBuildError(
            f"Series {volume.series_instance_uid}: a Key Object Selection needs objects to point at; "
            "build the RTSTRUCT, SEG, SR or overlay too."
        )
    others = sorted({str(ds.StudyInstanceUID) for ds in results} - {volume.study_instance_uid})
    if others:
        raise ResultBuildError(
            f"Series {volume.series_instance_uid}: objects of other studies ({', '.join(others)}) cannot be in this "
            f"study's Key Object Selection (study {volume.study_instance_uid}). Build them from this series."
        )
    created = created or datetime.now()
    engine, version = result.engine, result.engine_version

    def uid(role: str) -> str:
        return derived_uid(volume.series_instance_uid, engine, version, roi_keys(result), "KO", role, edit_digest(result))

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(engine, version), name=engine[:64], manufacturer_name=MANUFACTURER,
            model_name=f"{engine} {version}"[:64],
        ),
    )
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.OfInterest,
        referenced_objects=list(results),
        observer_device_context=observer,
        description=f"AI results of {engine} {version} on series {volume.series_instance_uid}",
    )
    ko = hd.ko.KeyObjectSelectionDocument(
        evidence=list(results),
        content=content,
        series_instance_uid=uid("series"),
        series_number=KO_SERIES_NUMBER,
        sop_instance_uid=uid("instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        contributing_equipment=[equipment_item(engine, version, created)],
        series_description=f"AI results ({engine})"[:64],
        content_date=created.date(),
        content_time=created.time().replace(tzinfo=None),
        series_date=created.date(),
        series_time=created.time().replace(tzinfo=None),
    )
    pin_times(ko, created)
    logger.info("Built KOS %s for series %s: %d objects", ko.SOPInstanceUID, volume.series_instance_uid, len(results))
    return ko
