"""Whether a label object may teach: approved agent output, or contours a person made.

- **Approved agent output.** An object made by imaging-agent (General Equipment or
  Contributing Equipment Manufacturer "imaging-agent", PS3.3 C.7.5.1 / C.12.1). Our RTSTRUCTs
  stay ``ApprovalStatus UNAPPROVED`` in DICOM (PS3.3 C.8.8.16: only a person approves), so the
  approval is read where the agent records it: after a reviewer approves, the writer marks the
  FHIR ImagingStudy ``available`` and lists the result series in ``ImagingStudy.series``
  (`tools.results.fhir_report.updated_imaging_study`). An object of ours whose series is not
  listed there was never approved (rejected, or stored behind the agent's back) and is skipped.
- **Human-made.** Any other structure set in which a person drew or edited the lungs: a lung
  ROI with ROI Generation Algorithm MANUAL or SEMIAUTOMATIC (PS3.3 C.8.8.5), a lung segment
  with Segment Algorithm Type MANUAL or SEMIAUTOMATIC (C.8.20.2), or an RTSTRUCT with
  ``ApprovalStatus APPROVED``. A radiologist's correction stored as a new series is one of these.
"""

from __future__ import annotations

from pydicom import Dataset

from tools.fhir.builders import uid_search_token
from tools.fhir.client import FhirClient
from tools.results.common import MANUFACTURER
from tools.segmentation.base import STRUCTURES
from tools.training.dataset import Origin
from tools.training.labels import LUNG_KEYS, LabelObject, SkipLabel

_PERSON_ALGORITHMS = frozenset({"MANUAL", "SEMIAUTOMATIC"})


def _made_by_agent(ds: Dataset) -> bool:
    if str(ds.get("Manufacturer", "")) == MANUFACTURER:
        return True
    return any(str(item.get("Manufacturer", "")) == MANUFACTURER for item in ds.get("ContributingEquipmentSequence", []))


def _made_by_person(label: LabelObject) -> bool:
    if any(algorithm in _PERSON_ALGORITHMS for _, _, algorithm in label.lungs.values()):
        return True
    return label.kind == "RTSTRUCT" and str(label.ds.get("ApprovalStatus", "")).upper() == "APPROVED"


class FhirApprovals:
    """Which result series the EHR lists as approved, per study (looked up once, when needed)."""

    def __init__(self, fhir: FhirClient) -> None:
        self._fhir = fhir
        self._cache: dict[str, tuple[set[str], str]] = {}

    def approved(self, study_uid: str) -> tuple[set[str], str]:
        """(approved series UIDs, why a series outside the set is not approved)."""
        if study_uid not in self._cache:
            found = self._fhir.search("ImagingStudy", {"identifier": uid_search_token(study_uid)})
            if not found:
                self._cache[study_uid] = (set(), f"no FHIR ImagingStudy has identifier urn:oid:{study_uid}, so no approval is recorded")
            else:
                study = found[0]
                if study.status != "available":
                    self._cache[study_uid] = (set(), f"ImagingStudy/{study.id} has status '{study.status}', so no result of it was approved")
                else:
                    listed = {str(s.uid) for s in study.series or []}
                    self._cache[study_uid] = (listed, f"ImagingStudy/{study.id} does not list this series among its approved results")
        return self._cache[study_uid]


def classify(label: LabelObject, approvals: FhirApprovals) -> Origin:
    """Where the label comes from, if it may be used at all.

    Raises:
        SkipLabel: it lacks a lung, was rejected, or is automatic output no person approved.
    """
    if not label.lungs:
        names = [str(r.get("ROIName", "")) for r in label.ds.get("StructureSetROISequence", [])] or [
            str(s.get("SegmentLabel", "")) for s in label.ds.get("SegmentSequence", [])
        ]
        raise SkipLabel(f"it has no lung ROI (ROIs: {', '.join(names) or 'none'}); training needs Left and Right lung")
    missing = [STRUCTURES[k].display for k in LUNG_KEYS if k not in label.lungs]
    if missing:
        raise SkipLabel(
            f"it has no {', '.join(missing)} ROI; a case needs both lungs, else the missing one would be taught as background"
        )
    if str(label.ds.get("ApprovalStatus", "")).upper() == "REJECTED":
        raise SkipLabel("its ApprovalStatus is REJECTED (PS3.3 C.8.8.16): a reviewer turned these contours down")
    if _made_by_person(label):
        return "human-made"
    if _made_by_agent(label.ds):
        approved, why = approvals.approved(label.study_uid)
        if label.series_uid in approved:
            return "approved-agent-output"
        raise SkipLabel(f"an imaging-agent result that was never approved: {why}")
    algorithms = sorted({algorithm or "unknown" for _, _, algorithm in label.lungs.values()})
    raise SkipLabel(
        f"automatic contours (algorithm {', '.join(algorithms)}) by {str(label.ds.get('Manufacturer', '') or 'unknown equipment')[:64]}"
        " that no person approved; store a reviewed copy (ApprovalStatus APPROVED or ROIs marked MANUAL) to use it"
    )
