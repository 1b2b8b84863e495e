"""The study's GTV, when its RT Structure Set is in the PACS: the region the lungs leave out.

A radiotherapy department contours the tumour (GTV) before the organs at risk; its structure set
lives in the same study. An ROI is a GTV when its RT ROI Interpreted Type is GTV (PS3.3 C.8.8.8)
or, as many planning systems leave that empty, its name starts with "GTV" (TG-263: GTV, GTV_p,
GTV-1 ...). Only structure sets drawn on the segmented series' frame of reference count.
"""

from __future__ import annotations

import logging
import re

import numpy as np
from pydicom import Dataset

from tools.dicomweb.client import DicomwebClient
from tools.imaging.volume import Volume
from tools.results.rtstruct import RTStructError, rtstruct_masks
from tools.segmentation.exclusion import Exclusion

log = logging.getLogger(__name__)

_GTV_NAME = re.compile(r"^\s*GTV", re.IGNORECASE)


def gtv_names(ds: Dataset) -> list[str]:
    """The names of the structure set's GTV ROIs."""
    names = {int(roi.ROINumber): str(roi.get("ROIName", "")) for roi in ds.get("StructureSetROISequence", [])}
    typed = {
        int(obs.ReferencedROINumber)
        for obs in ds.get("RTROIObservationsSequence", [])
        if str(obs.get("RTROIInterpretedType", "")).upper() == "GTV"
    }
    return sorted(name for number, name in names.items() if number in typed or _GTV_NAME.match(name))


def find_gtv(pacs: DicomwebClient, study_instance_uid: str, volume: Volume) -> Exclusion | None:
    """The union of the GTVs of the study's structure sets on `volume`'s frame of reference, or None."""
    region = np.zeros(volume.array.shape, dtype=bool)
    sources: list[str] = []
    for series in pacs.search_series(study_instance_uid, {"Modality": "RTSTRUCT"}):
        for instance in pacs.search_instances(study_instance_uid, series.series_instance_uid):
            ds = pacs.retrieve_instance(study_instance_uid, series.series_instance_uid, instance.sop_instance_uid)
            names = gtv_names(ds)
            frames = {str(r.get("ReferencedFrameOfReferenceUID", "")) for r in ds.get("StructureSetROISequence", [])}
            if not names or volume.frame_of_reference_uid not in frames:
                continue
            try:
                masks = rtstruct_masks(ds, volume)
            except RTStructError as exc:
                log.warning("RTSTRUCT %s of study %s not used for its GTV: %s", instance.sop_instance_uid, study_instance_uid, exc)
                continue
            for name in names:
                if name in masks and masks[name].any():
                    region |= masks[name]
                    sources.append(f"ROI '{name}' of RTSTRUCT {instance.sop_instance_uid}")
    if not sources:
        return None
    return Exclusion(mask=region, source=", ".join(sources))
