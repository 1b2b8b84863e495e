"""Find training data in the PACS: CT series whose lung contours a person approved or made.

Every study with a label series (RTSTRUCT or SEG) is read: each label object is read
(`tools.training.labels`), taken only if approved agent output or made by a person
(`tools.training.origin`), paired with its CT series and saved as a case
(`tools.training.pairing`). Everything not taken is reported with a reason a person can act on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel

from tools.dicomweb.client import DicomwebClient, PacsError
from tools.fhir.client import FhirClient
from tools.training.dataset import DEFAULT_PIXDIM, write_skipped
from tools.training.labels import LabelKind, LabelObject, SkipLabel, read_label
from tools.training.origin import FhirApprovals, classify
from tools.training.pairing import TrainingPair, by_preference, ct_series, pair_case

log = logging.getLogger(__name__)


class SkippedCase(BaseModel):
    """A label object not taken, and why."""

    study_instance_uid: str
    series_instance_uid: str
    label_kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.label_kind} series {self.series_instance_uid} (study {self.study_instance_uid}): {self.reason}"


class GatherReport(BaseModel):
    pairs: list[TrainingPair]
    skipped: list[SkippedCase]
    studies_scanned: int


class _Gatherer:
    """One gather's progress: the pairs taken and the label objects skipped, study by study."""

    def __init__(self, pacs: DicomwebClient, fhir: FhirClient, cases_dir: Path, pixdim: Sequence[float]) -> None:
        self.pacs = pacs
        self.approvals = FhirApprovals(fhir)
        self.cases_dir = cases_dir
        self.pixdim = tuple(float(p) for p in pixdim)
        self.pairs: list[TrainingPair] = []
        self.skipped: list[SkippedCase] = []

    def skip(self, study_uid: str, series_uid: str, kind: str, reason: str) -> None:
        self.skipped.append(SkippedCase(study_instance_uid=study_uid, series_instance_uid=series_uid, label_kind=kind, reason=reason))
        log.info("training data: skipped %s series %s (study %s): %s", kind, series_uid, study_uid, reason)

    def study(self, study_uid: str) -> None:
        series = self.pacs.search_series(study_uid)
        ct_uids = [s.series_instance_uid for s in series if s.modality == "CT"]
        labels: list[LabelObject] = []
        for summary in series:
            if summary.modality not in ("RTSTRUCT", "SEG"):
                continue
            kind: LabelKind = "RTSTRUCT" if summary.modality == "RTSTRUCT" else "SEG"
            try:
                datasets = self.pacs.retrieve_series(study_uid, summary.series_instance_uid)
            except PacsError as exc:
                self.skip(study_uid, summary.series_instance_uid, kind, f"the PACS could not send it: {exc}")
                continue
            for ds in datasets:
                try:
                    label = read_label(ds, kind, study_uid, summary.series_instance_uid)
                    label.origin = classify(label, self.approvals)
                except SkipLabel as exc:
                    self.skip(study_uid, summary.series_instance_uid, kind, str(exc))
                    continue
                labels.append(label)
        taken: dict[str, LabelObject] = {}
        for label in by_preference(labels):
            try:
                ct_uid = ct_series(self.pacs, label, ct_uids)
                if ct_uid in taken:
                    first = taken[ct_uid]
                    raise SkipLabel(
                        f"CT series {ct_uid} already has training labels from {first.kind} series {first.series_uid} "
                        f"({first.origin}), which is preferred (human-made first, then SEG, then newest)"
                    )
                self.pairs.append(pair_case(self.pacs, label, ct_uid, self.cases_dir, self.pixdim))
                taken[ct_uid] = label
            except SkipLabel as exc:
                self.skip(study_uid, label.series_uid, label.kind, str(exc))


def label_studies(pacs: DicomwebClient) -> list[str]:
    """Studies that hold an RTSTRUCT or SEG series (QIDO ModalitiesInStudy, PS3.18 10.6)."""
    found: dict[str, None] = {}
    for modality in ("RTSTRUCT", "SEG"):
        for study in pacs.search_studies({"ModalitiesInStudy": modality}):
            found[study.study_instance_uid] = None
    return list(found)


def gather_cases(
    pacs: DicomwebClient,
    fhir: FhirClient,
    cases_dir: Path,
    *,
    study_uids: Iterable[str] | None = None,
    pixdim: Sequence[float] = DEFAULT_PIXDIM,
    progress: Callable[[int, int], None] | None = None,
) -> GatherReport:
    """Write a case for every usable pair in ``study_uids`` (default: every study with a label series).

    A case already on disk for the same label object and pixdim is kept without fetching the CT
    again. The skipped list is saved as ``cases_dir/skipped.json`` for the training error message.

    Raises:
        ServiceUnavailableError: the PACS or the FHIR server is down (nothing is half written).
    """
    gatherer = _Gatherer(pacs, fhir, cases_dir, pixdim)
    studies = list(study_uids) if study_uids is not None else label_studies(pacs)
    for done, study_uid in enumerate(studies, start=1):
        gatherer.study(study_uid)
        if progress is not None:
            progress(done, len(studies))
    write_skipped(cases_dir, gatherer.skipped)
    log.info("training data: %d pairs, %d skipped, %d studies", len(gatherer.pairs), len(gatherer.skipped), len(studies))
    return GatherReport(pairs=gatherer.pairs, skipped=gatherer.skipped, studies_scanned=len(studies))

