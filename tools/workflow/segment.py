"""The segment step: the requested engine, then its fallbacks, each result QA-assessed.

Kept apart from prepare.py, which imports the FHIR and DICOMweb clients, so the offline
`contour` command starts without them (issue 11: start-up imports only where used).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from tools.http.errors import ServiceUnavailableError
from tools.imaging.projection import is_projection
from tools.imaging.volume import Volume
from tools.segmentation.base import EngineError, SegmentationResult
from tools.segmentation.catalog import EngineCatalog, check_engine_modality
from tools.segmentation.exclusion import Exclusion, without
from tools.segmentation.qa import assess
from tools.workflow.failure import StudyFailure


def targets_for(modality: str, targets: Sequence[str]) -> list[str]:
    """On a chest radiograph the lungs come with the heart: the cardiothoracic ratio needs all three."""
    wanted = list(targets)
    if is_projection(modality) and "lungs" in wanted and "heart" not in wanted:
        wanted.append("heart")
    return wanted


def engine_chain(requested: str, fallbacks: Sequence[str]) -> list[str]:
    """The requested engine first, then each configured fallback once."""
    return [requested, *[e for e in dict.fromkeys(fallbacks) if e != requested]]


class Segmented(NamedTuple):
    result: SegmentationResult
    not_used: list[str]
    """why each engine tried before the one used was not used, for the reviewer"""
    engine_errors: list[str]
    """the engines among those that raised an error (the others failed QA), for the metrics"""


class NoEngineResultError(StudyFailure):
    """Every engine of the chain failed; `engine_errors` names those that raised an error."""

    def __init__(self, message: str, engine_errors: list[str]) -> None:
        super().__init__(message)
        self.engine_errors = engine_errors


def segment_with_fallback(
    engines: EngineCatalog,
    volume: Volume,
    chain: Sequence[str],
    targets: Sequence[str],
    exclusion: Exclusion | None = None,
    *,
    assess_last: bool = True,
) -> Segmented:
    """The first engine in `chain` whose result exists and passes QA (the last one's result stands
    even with failed QA, so the reviewer sees it), assessed, with why the engines before it were
    not used. `exclusion` (the study's GTV) is left out of every engine's result before QA.

    `assess_last=False`: the last engine's result comes back unassessed, since its QA decides
    nothing here; the caller assesses it (the `contour` command, on one core while the other
    builds the DICOM objects).
    """
    not_used: list[str] = []
    errors: list[str] = []
    for name in chain:
        try:
            check_engine_modality(name, volume.modality, volume.series_instance_uid)
            raw = engines.get(name).segment(volume, list(targets))
            kept = without(raw, exclusion, volume) if exclusion is not None else raw
            if name == chain[-1] and not assess_last:
                return Segmented(kept, not_used, errors)
            result = assess(volume, kept)
        except (EngineError, ServiceUnavailableError, ValueError) as exc:
            not_used.append(f"{name}: {exc}")
            errors.append(name)
            continue
        failed = [f.message for f in result.all_flags() if f.severity == "fail"]
        if failed and name != chain[-1]:
            not_used.append(f"{name}: QA failed ({'; '.join(failed)})")
            continue
        return Segmented(result, not_used, errors)
    raise NoEngineResultError(
        f"no segmentation engine produced a result for series {volume.series_instance_uid}: "
        + " | ".join(not_used)
        + ". Check the engines' configuration (imaging-agent --help, .env.example).",
        errors,
    )
