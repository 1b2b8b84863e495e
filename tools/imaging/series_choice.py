"""Which series of a study to contour, by rules a radiographer would state out loud."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from tools.dicomweb.models import SeriesSummary

MIN_SLICES = 20
MAX_THICKNESS_MM = 5.0
CHEST_BODY_PARTS = {"CHEST", "LUNG", "THORAX", "CHEST_ABDOMEN", "CHESTABDOMEN", "CHEST_TO_PELVIS"}
RADIOGRAPH_MODALITIES = ("DX", "CR")


class NoSuitableSeriesError(ValueError):
    """The study has no series the engine can use; the message lists what it has."""


class ChosenSeries(BaseModel):
    series_instance_uid: str
    # A request built before the field existed was CT.
    modality: str = "CT"
    description: str | None
    images: int
    slice_thickness_mm: float | None
    reason: str


def _describe(s: SeriesSummary) -> str:
    thickness = f", {s.slice_thickness_mm:g} mm" if s.slice_thickness_mm else ""
    part = f", {s.body_part_examined}" if s.body_part_examined else ""
    return f"{s.series_instance_uid} ({s.modality or '?'}, {s.number_of_instances or 0} images{thickness}{part})"


def _why_not(s: SeriesSummary) -> str | None:
    if (s.modality or "").upper() != "CT":
        return "not CT"
    if (s.number_of_instances or 0) < MIN_SLICES:
        return f"fewer than {MIN_SLICES} images (a localizer or a partial series)"
    if s.slice_thickness_mm is not None and s.slice_thickness_mm > MAX_THICKNESS_MM:
        return f"slices thicker than {MAX_THICKNESS_MM:g} mm"
    return None


def choose_ct_series(study_instance_uid: str, series: Sequence[SeriesSummary]) -> ChosenSeries:
    """The CT series to contour: chest body part first, then thinner slices, then more images."""
    usable = [s for s in series if _why_not(s) is None]
    if not usable:
        listing = "; ".join(f"{_describe(s)}: {_why_not(s)}" for s in series) or "none"
        raise NoSuitableSeriesError(
            f"study {study_instance_uid} has no CT series the lung engine can use (it needs CT with at "
            f"least {MIN_SLICES} images of at most {MAX_THICKNESS_MM:g} mm). Series found: {listing}. "
            f"Send a complete thin-slice (at most {MAX_THICKNESS_MM:g} mm) CT reconstruction of this study to the PACS."
        )

    def score(s: SeriesSummary) -> tuple[bool, float, int]:
        chest = (s.body_part_examined or "").upper().replace(" ", "_") in CHEST_BODY_PARTS
        return (chest, -(s.slice_thickness_mm or MAX_THICKNESS_MM), s.number_of_instances or 0)

    best = max(usable, key=score)
    others = [s for s in series if s is not best]
    reason = f"chose {_describe(best)}: CT, enough images, thin enough slices"
    if (best.body_part_examined or "").upper() in CHEST_BODY_PARTS:
        reason += ", chest body part"
    if others:
        reason += "; not chosen: " + "; ".join(
            f"{_describe(s)} ({_why_not(s) or 'ranked lower: body part, thickness, image count'})" for s in others
        )
    return ChosenSeries(
        series_instance_uid=best.series_instance_uid,
        modality=(best.modality or "CT").upper(),
        description=best.series_description,
        images=best.number_of_instances or 0,
        slice_thickness_mm=best.slice_thickness_mm,
        reason=reason,
    )


def _is_chest(s: SeriesSummary) -> bool:
    return (s.body_part_examined or "").upper().replace(" ", "_") in CHEST_BODY_PARTS


def choose_radiograph_series(study_instance_uid: str, series: Sequence[SeriesSummary]) -> ChosenSeries:
    """The chest radiograph series (DX before CR, chest body part first); its frontal image is chosen
    when the images are read (tools/imaging/projection.py), since View Position is an image attribute."""
    usable = [s for s in series if (s.modality or "").upper() in RADIOGRAPH_MODALITIES and (s.number_of_instances or 0) > 0]
    if not usable:
        listing = "; ".join(_describe(s) for s in series) or "none"
        raise NoSuitableSeriesError(
            f"study {study_instance_uid} has no radiograph (DX or CR) series with images. Series found: {listing}. "
            "Send the chest radiograph to the PACS, or choose the engine and goal for the modality it has."
        )
    best = max(usable, key=lambda s: (_is_chest(s), (s.modality or "").upper() == "DX", s.number_of_instances or 0))
    reason = f"chose {_describe(best)}: a radiograph series" + (", chest body part" if _is_chest(best) else "")
    others = [s for s in series if s is not best]
    if others:
        reason += "; not chosen: " + "; ".join(_describe(s) for s in others)
    return ChosenSeries(
        series_instance_uid=best.series_instance_uid,
        modality=(best.modality or "DX").upper(),
        description=best.series_description,
        images=best.number_of_instances or 0,
        slice_thickness_mm=None,
        reason=reason,
    )


def choose_mr_series(study_instance_uid: str, series: Sequence[SeriesSummary]) -> ChosenSeries:
    """The MR series with the most images (at least MIN_SLICES): one volume for MedImageParse's MR targets."""
    usable = [s for s in series if (s.modality or "").upper() == "MR" and (s.number_of_instances or 0) >= MIN_SLICES]
    if not usable:
        listing = "; ".join(_describe(s) for s in series) or "none"
        raise NoSuitableSeriesError(
            f"study {study_instance_uid} has no MR series of at least {MIN_SLICES} images. Series found: {listing}."
        )
    best = max(usable, key=lambda s: (-(s.slice_thickness_mm or MAX_THICKNESS_MM), s.number_of_instances or 0))
    others = [s for s in series if s is not best]
    reason = f"chose {_describe(best)}: MR, the thinnest slices, then the most images"
    if others:
        reason += "; not chosen: " + "; ".join(_describe(s) for s in others)
    return ChosenSeries(
        series_instance_uid=best.series_instance_uid, modality="MR", description=best.series_description,
        images=best.number_of_instances or 0, slice_thickness_mm=best.slice_thickness_mm, reason=reason,
    )


def choose_series(study_instance_uid: str, series: Sequence[SeriesSummary]) -> ChosenSeries:
    """A usable CT series when the study has one (the CT rules above), else its chest radiograph series,
    else its MR series.

    A study holding no CT at all but a radiograph is a radiograph study; one with neither is refused
    with the CT rules' listing, which names every series and why it was not usable.
    """
    if any(_why_not(s) is None for s in series):
        return choose_ct_series(study_instance_uid, series)
    if any((s.modality or "").upper() in RADIOGRAPH_MODALITIES for s in series):
        return choose_radiograph_series(study_instance_uid, series)
    if any((s.modality or "").upper() == "MR" and (s.number_of_instances or 0) >= MIN_SLICES for s in series):
        return choose_mr_series(study_instance_uid, series)
    return choose_ct_series(study_instance_uid, series)
