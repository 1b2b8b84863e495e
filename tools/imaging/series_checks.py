"""The checks that a series forms one regular stack, and the refusal a radiologist can read.

A series that cannot be stacked into one regular grid is refused with a
:class:`SeriesRefusedError` naming the series, a short reason code, what is wrong and what
to do; nothing is resampled or guessed (DICOM PS3.3 C.7.6.2, Image Plane module).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

# Image Orientation (Patient) cosines are written with ~6 decimals by scanners.
_ORIENTATION_TOLERANCE = 1e-4
# Two slices closer than this along the normal occupy the same place (mm).
_DUPLICATE_TOLERANCE_MM = 0.01
# A slice step this far off the normal means a tilted or sheared stack (degrees).
_TILT_TOLERANCE_DEG = 0.5
# Pixel Spacing values differing by less than this are the same spacing (mm).
_PIXEL_SPACING_TOLERANCE_MM = 1e-4


class SeriesRefusedError(ValueError):
    """A series that cannot be turned into one regular, correctly placed volume.

    Attributes:
        series_instance_uid: the series refused ("" when there was none to name).
        reason: short machine code, e.g. "missing-slices", "gantry-tilt".
        detail: what is wrong, in one or two sentences.
        action: what the user can do about it.
    """

    def __init__(self, series_instance_uid: str, reason: str, detail: str, action: str) -> None:
        self.series_instance_uid = series_instance_uid
        self.reason = reason
        self.detail = detail
        self.action = action
        name = f"Series {series_instance_uid}" if series_instance_uid else "The series"
        super().__init__(f"{name} cannot be assembled into a volume ({reason}): {detail} {action}")



@dataclass(frozen=True)
class Plane:
    """Image Plane module values of one slice (PS3.3 C.7.6.2)."""

    row: np.ndarray
    column: np.ndarray
    position: np.ndarray
    row_spacing: float
    column_spacing: float
    rows: int
    columns: int


def describe(dataset: Dataset) -> str:
    """Name one instance in a message: its SOP Instance UID and file, when known."""
    name = f"instance {dataset.get('SOPInstanceUID') or '<no SOP Instance UID>'}"
    filename = getattr(dataset, "filename", None)
    return f"{name} ({filename})" if isinstance(filename, str) and filename else name


def check_identity(datasets: Sequence[Dataset]) -> str:
    if not datasets:
        raise SeriesRefusedError(
            "", "empty", "No DICOM instances were given.",
            "Check that the series query returned instances or that the folder holds the series.",
        )
    series_uids = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in datasets})
    if len(series_uids) > 1:
        raise SeriesRefusedError(
            ", ".join(uid or "<none>" for uid in series_uids), "mixed-series",
            f"The instances belong to {len(series_uids)} different series.",
            "Split them with group_by_series() and assemble each series on its own.",
        )
    series_uid = series_uids[0]
    for keyword in ("SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        lacking = [ds for ds in datasets if not ds.get(keyword)]
        if lacking:
            raise SeriesRefusedError(
                series_uid, "missing-identifiers",
                f"{len(lacking)} instance(s) lack {keyword}, e.g. {describe(lacking[0])}.",
                "The files are not conformant DICOM images; re-export them from the PACS.",
            )
    studies = sorted({str(ds.StudyInstanceUID) for ds in datasets})
    if len(studies) > 1:
        raise SeriesRefusedError(
            series_uid, "mixed-series",
            f"The series' instances claim {len(studies)} different studies ({', '.join(studies)}).",
            "The export is inconsistent; fetch the series again from the PACS.",
        )
    sop_classes = sorted({str(ds.SOPClassUID) for ds in datasets})
    if len(sop_classes) > 1:
        raise SeriesRefusedError(
            series_uid, "mixed-series",
            f"The series mixes SOP classes {', '.join(sop_classes)}.",
            "Keep only the image instances of one SOP class (e.g. CT Image Storage) and retry.",
        )
    frames = sorted({str(ds.get("FrameOfReferenceUID", "")) for ds in datasets})
    if frames == [""]:
        raise SeriesRefusedError(
            series_uid, "no-geometry", "The instances have no Frame of Reference UID, so they cannot be placed in patient space.",
            "Use a series with the Frame of Reference module (every conformant CT image has one).",
        )
    if len(frames) > 1:
        raise SeriesRefusedError(
            series_uid, "mixed-frame-of-reference",
            f"The slices use {len(frames)} different frames of reference ({', '.join(f or '<none>' for f in frames)}).",
            "Ask for a series acquired in one frame of reference, or split it at the PACS.",
        )
    return series_uid


def check_modality(datasets: Sequence[Dataset], series_uid: str, required: str | None) -> str:
    modalities = sorted({str(ds.get("Modality", "")) for ds in datasets})
    if required is not None and modalities != [required]:
        found = ", ".join(m or "<none>" for m in modalities)
        raise SeriesRefusedError(
            series_uid, "wrong-modality", f"The series has modality {found}; {required} is required.",
            f"Choose a {required} series of the study.",
        )
    if len(modalities) > 1:
        raise SeriesRefusedError(
            series_uid, "mixed-series", f"The series mixes modalities {', '.join(modalities)}.",
            "Keep the instances of one modality and retry.",
        )
    return modalities[0]


def read_plane(dataset: Dataset, series_uid: str) -> Plane:
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise SeriesRefusedError(
            series_uid, "multi-frame",
            f"{describe(dataset)} is a multi-frame image; only single-frame slices are stacked here.",
            "Request the series as single-frame (legacy) CT images, or convert it first.",
        )
    try:
        orientation = np.array([float(v) for v in dataset.ImageOrientationPatient], dtype=float)
        position = np.array([float(v) for v in dataset.ImagePositionPatient], dtype=float)
        row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except (AttributeError, TypeError, ValueError) as error:
        raise SeriesRefusedError(
            series_uid, "no-geometry",
            f"{describe(dataset)} lacks a usable Image Plane module "
            f"(Image Orientation/Position (Patient), Pixel Spacing, Rows, Columns): {error}.",
            "The slice cannot be placed in patient space; re-export the series with its geometry tags.",
        ) from error
    if orientation.shape != (6,) or position.shape != (3,) or row_spacing <= 0 or column_spacing <= 0:
        raise SeriesRefusedError(
            series_uid, "no-geometry",
            f"{describe(dataset)} has malformed geometry: orientation {orientation.tolist()}, "
            f"position {position.tolist()}, pixel spacing {[row_spacing, column_spacing]}.",
            "Re-export the series with valid Image Plane tags.",
        )
    row, column = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(column) - 1) > 1e-3 or abs(row @ column) > 1e-3:
        raise SeriesRefusedError(
            series_uid, "no-geometry",
            f"{describe(dataset)} has an Image Orientation (Patient) {orientation.tolist()} whose "
            "cosines are not two orthogonal unit vectors.",
            "Re-export the series with valid Image Plane tags.",
        )
    return Plane(row, column, position, row_spacing, column_spacing, rows, columns)


def check_same_plane(datasets: Sequence[Dataset], planes: list[Plane], series_uid: str) -> None:
    reference = planes[0]
    for dataset, plane in zip(datasets, planes, strict=True):
        deviation = max(np.abs(plane.row - reference.row).max(), np.abs(plane.column - reference.column).max())
        if deviation > _ORIENTATION_TOLERANCE:
            raise SeriesRefusedError(
                series_uid, "mixed-orientation",
                f"{describe(dataset)} is oriented {np.r_[plane.row, plane.column].round(5).tolist()} but "
                f"{describe(datasets[0])} {np.r_[reference.row, reference.column].round(5).tolist()}; "
                "the slices do not form one stack.",
                "Remove localizer/scout images or other reformats from the series, or pick a series of axial slices only.",
            )
    for dataset, plane in zip(datasets, planes, strict=True):
        if (plane.rows, plane.columns) != (reference.rows, reference.columns) or (
            abs(plane.row_spacing - reference.row_spacing) > _PIXEL_SPACING_TOLERANCE_MM
            or abs(plane.column_spacing - reference.column_spacing) > _PIXEL_SPACING_TOLERANCE_MM
        ):
            raise SeriesRefusedError(
                series_uid, "mixed-dimensions",
                f"{describe(dataset)} is {plane.rows}x{plane.columns} with pixel spacing "
                f"{[plane.row_spacing, plane.column_spacing]} mm, {describe(datasets[0])} is "
                f"{reference.rows}x{reference.columns} with {[reference.row_spacing, reference.column_spacing]} mm.",
                "All slices of a volume need the same matrix and pixel spacing; pick a series reconstructed in one field of view.",
            )


def check_stacking(
    datasets: list[Dataset],
    positions: np.ndarray,
    normal: np.ndarray,
    plane: Plane,
    series_uid: str,
    spacing_tolerance: float,
    gap_factor: float,
) -> float:
    """Check that the sorted slices form a regular stack along the normal; return its spacing (mm)."""
    tilted = [ds for ds in datasets if abs(float(ds.get("GantryDetectorTilt", 0) or 0)) > 0]
    if tilted:
        raise SeriesRefusedError(
            series_uid, "gantry-tilt",
            f"The series was acquired with a gantry tilt of {float(tilted[0].GantryDetectorTilt)} degrees "
            f"(Gantry/Detector Tilt of {describe(tilted[0])}).",
            "Reconstruct the series without tilt, or resample it to an orthogonal grid, before analysis.",
        )
    if len(datasets) == 1:
        return _single_slice_spacing(datasets[0], series_uid)

    distances = positions @ normal
    steps_along = np.diff(distances)
    duplicates = np.flatnonzero(steps_along < _DUPLICATE_TOLERANCE_MM)
    if duplicates.size:
        k = int(duplicates[0])
        raise SeriesRefusedError(
            series_uid, "duplicate-position",
            f"{duplicates.size} pair(s) of slices share a position; e.g. {describe(datasets[k])} and "
            f"{describe(datasets[k + 1])} both lie at {distances[k]:.2f} mm along the slice normal.",
            "Remove the duplicate instances (a repeated acquisition or a resent copy) and retry.",
        )

    step_vectors = np.diff(positions, axis=0)
    cosines = np.clip(steps_along / np.linalg.norm(step_vectors, axis=1), -1.0, 1.0)
    angles = np.degrees(np.arccos(cosines))
    offsets = positions - positions[0]
    in_plane = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    # Half a pixel of accumulated sideways drift puts a slice's pixels in the wrong voxel.
    drift_limit = 0.5 * min(plane.row_spacing, plane.column_spacing)
    if angles.max() > _TILT_TOLERANCE_DEG or in_plane.max() > drift_limit:
        raise SeriesRefusedError(
            series_uid, "gantry-tilt",
            f"The slices are not stacked along their normal: slice positions step at up to "
            f"{angles.max():.2f} degrees from it and drift {in_plane.max():.2f} mm sideways, "
            "as in a gantry-tilted acquisition.",
            "Reconstruct the series without tilt, or resample it to an orthogonal grid, before analysis.",
        )

    median = float(np.median(steps_along))
    gaps = np.flatnonzero(steps_along > gap_factor * median)
    if gaps.size:
        k = int(gaps[0])
        missing = sum(max(1, round(float(steps_along[g]) / median) - 1) for g in gaps)
        raise SeriesRefusedError(
            series_uid, "missing-slices",
            f"About {missing} slice(s) are missing: e.g. a gap of {steps_along[k]:.2f} mm between "
            f"{describe(datasets[k])} and {describe(datasets[k + 1])}, where slices are "
            f"{median:.2f} mm apart.",
            "Fetch the complete series again from the PACS (or ask for it to be resent from the scanner).",
        )
    deviation = np.abs(steps_along - median) / median
    if deviation.max() > spacing_tolerance:
        k = int(np.argmax(deviation))
        raise SeriesRefusedError(
            series_uid, "uneven-spacing",
            f"Slice spacing varies: {steps_along[k]:.3f} mm between {describe(datasets[k])} and "
            f"{describe(datasets[k + 1])} against a median of {median:.3f} mm "
            f"({deviation.max():.1%} off, tolerance {spacing_tolerance:.0%}).",
            "Use a series reconstructed at even spacing, or resample it to a regular grid first.",
        )
    return float((distances[-1] - distances[0]) / (len(distances) - 1))


def _single_slice_spacing(dataset: Dataset, series_uid: str) -> float:
    """A lone slice has no neighbour to measure from; its nominal thickness is the spacing."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = dataset.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    raise SeriesRefusedError(
        series_uid, "no-geometry",
        f"The series has a single slice ({describe(dataset)}) without Slice Thickness, so its depth is unknown.",
        "Use a series with several slices.",
    )

