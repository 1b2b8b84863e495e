"""``make_phantom``: the anatomy in array order, with UIDs derived from the spec."""

from __future__ import annotations

import numpy as np
from pydicom.uid import generate_uid

from tools.phantom.anatomy import canonical_labels, hounsfield
from tools.phantom.spec import Phantom, PhantomSpec, Tissue

_UID_NAMESPACE = "imaging-agent phantom v1"


def make_phantom(spec: PhantomSpec) -> Phantom:
    """Generate the phantom in memory; pure and deterministic in ``spec``."""
    labels = canonical_labels(spec)
    hu = hounsfield(labels, spec)
    if spec.patient_position == "FFS":
        # Canonical order is (inferior->superior, posterior rows, patient-left columns);
        # FFS array order runs superior->inferior with columns to the patient's right.
        labels = np.ascontiguousarray(labels[::-1, :, ::-1])
        hu = np.ascontiguousarray(hu[::-1, :, ::-1])
    study_uid, series_uid, for_uid, sop_uids = _uids(spec)
    return Phantom(
        hu=hu,
        left_lung=(labels == Tissue.LUNG_LEFT) | (labels == Tissue.VESSEL_LEFT),
        right_lung=(labels == Tissue.LUNG_RIGHT) | (labels == Tissue.VESSEL_RIGHT),
        spec=spec,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        frame_of_reference_uid=for_uid,
        sop_instance_uids=sop_uids,
        labels=labels,
    )


def _uids(spec: PhantomSpec) -> tuple[str, str, str, list[str]]:
    # Entropy is the whole spec, so the same spec re-seeds the same UIDs (idempotent
    # writes) while any change to the pixels or the geometry gives new ones.
    spec_key = spec.model_dump_json()
    study = spec.study_instance_uid or generate_uid(
        entropy_srcs=[_UID_NAMESPACE, "study", spec_key]
    )
    series = generate_uid(entropy_srcs=[_UID_NAMESPACE, "series", study, spec_key])
    frame = generate_uid(entropy_srcs=[_UID_NAMESPACE, "frame-of-reference", series])
    sops = [
        generate_uid(entropy_srcs=[_UID_NAMESPACE, "sop", series, str(k)])
        for k in range(spec.slices)
    ]
    return str(study), str(series), str(frame), [str(uid) for uid in sops]
