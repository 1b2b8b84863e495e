"""Assemble a CT series into a geometry-checked 3D volume in Hounsfield units.

Slices are placed by the Image Plane module (DICOM PS3.3 C.7.6.2): they are sorted by the
projection of Image Position (Patient) onto the slice normal (row direction x column
direction of Image Orientation (Patient)), never by Instance Number, which PS3.3 does not
tie to position. A series that cannot be stacked into one regular grid is refused with a
:class:`SeriesRefusedError` whose reason a radiologist can read; nothing is resampled or
guessed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from tools.imaging.geometry import Geometry

__all__ = [
    "Geometry",
    "SeriesRefusedError",
    "Volume",
    "assemble_volume",
    "group_by_series",
    "read_series_dir",
]

logger = logging.getLogger(__name__)

# Image Orientation (Patient) cosines are written with ~6 decimals by scanners.
_ORIENTATION_TOLERANCE = 1e-4
# Two slices closer than this along the normal occupy the same place (mm).
_DUPLICATE_TOLERANCE_MM = 0.01
# A slice step this far off the normal means a tilted or sheared stack (degrees).
_TILT_TOLERANCE_DEG = 0.5
# Pixel Spacing values differing by less than this are the same spacing (mm).
_PIXEL_SPACING_TOLERANCE_MM = 1e-4
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

# Which package decodes which compressed transfer syntax in pydicom 3 (PS3.5 Annex A.4).
_CODEC_PACKAGES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.80": "pyjpegls, or pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.81": "pyjpegls, or pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg and pylibjpeg-openjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg and pylibjpeg-openjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle (pydicom's own RLE decoder also needs numpy)",
}


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


@dataclass
class Volume:
    """A CT series as a (slices, rows, columns) array with its patient-space geometry.

    ``array`` holds Hounsfield units (Rescale Slope/Intercept applied per slice, PS3.3
    C.11.1.1.2). Its dtype is int16 when every slice has slope 1 and an integral intercept
    and the values fit (exact and half the memory), float32 otherwise.
    ``sop_instance_uids[k]`` is the instance that became ``array[k]``.
    """

    array: np.ndarray
    geometry: Geometry
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    modality: str
    sop_instance_uids: list[str]
    sop_class_uid: str

    def __post_init__(self) -> None:
        if tuple(self.array.shape) != self.geometry.shape:
            raise ValueError(
                f"Volume of series {self.series_instance_uid}: array shape {self.array.shape} "
                f"does not match geometry shape {self.geometry.shape}"
            )
        if len(self.sop_instance_uids) != self.geometry.shape[0]:
            raise ValueError(
                f"Volume of series {self.series_instance_uid}: {len(self.sop_instance_uids)} "
                f"SOP Instance UIDs for {self.geometry.shape[0]} slices"
            )


def read_series_dir(path: Path) -> list[Dataset]:
    """Read every DICOM Part 10 file under ``path`` (recursively), pixel data included.

    Files without the PS3.10 preamble and "DICM" prefix are skipped with a warning, as is
    a DICOMDIR (a media directory, not an image).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        NotADirectoryError: ``path`` is a file.
        ValueError: no DICOM file was found under ``path``.
    """
    if not path.exists():
        raise FileNotFoundError(f"DICOM folder {path} does not exist; check the path or fetch the series first.")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder; pass the folder holding the series.")
    datasets: list[Dataset] = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        try:
            dataset = pydicom.dcmread(file)
        except InvalidDicomError:
            logger.warning("Skipping %s: not a DICOM Part 10 file", file)
            continue
        if dataset.file_meta.get("MediaStorageSOPClassUID") == _MEDIA_STORAGE_DIRECTORY:
            logger.warning("Skipping %s: a DICOMDIR, not an image", file)
            continue
        datasets.append(dataset)
    if not datasets:
        raise ValueError(f"No DICOM files found under {path}; check that the series was downloaded there.")
    logger.info("Read %d DICOM files from %s", len(datasets), path)
    return datasets


def group_by_series(datasets: Sequence[Dataset]) -> dict[str, list[Dataset]]:
    """Group datasets by Series Instance UID, in order of first appearance.

    Datasets without a Series Instance UID are grouped under "" (assembly refuses them).
    """
    groups: dict[str, list[Dataset]] = {}
    for dataset in datasets:
        groups.setdefault(str(dataset.get("SeriesInstanceUID", "")), []).append(dataset)
    return groups


def assemble_volume(
    datasets: Sequence[Dataset],
    *,
    required_modality: str | None = "CT",
    spacing_tolerance: float = 0.05,
    gap_factor: float = 1.5,
) -> Volume:
    """Stack the single-frame images of one series into a :class:`Volume`.

    Slice k increases along the normal n = row direction x column direction of Image
    Orientation (Patient), so ``geometry.direction[2]`` is n and slice 0 is the slice lowest
    along it (for standard axial IOP the most inferior one, head first or feet first alike).
    The slice spacing is the mean step between Image Positions (Patient) along n; Slice
    Thickness is not used, since slices may overlap or leave gaps between them.

    Args:
        datasets: the instances of one series, in any order.
        required_modality: refuse other modalities; None accepts any.
        spacing_tolerance: largest accepted relative deviation of a slice step from the
            median step.
        gap_factor: a step larger than this multiple of the median step is a missing slice.

    Raises:
        SeriesRefusedError: with reason "empty", "mixed-series", "missing-identifiers",
            "mixed-frame-of-reference", "wrong-modality", "multi-frame", "no-geometry",
            "mixed-orientation", "mixed-dimensions", "gantry-tilt", "duplicate-position",
            "missing-slices", "uneven-spacing" or "undecodable-pixels".
    """
    series_uid = _check_identity(datasets)
    modality = _check_modality(datasets, series_uid, required_modality)
    planes = [_read_plane(ds, series_uid) for ds in datasets]
    _check_same_plane(datasets, planes, series_uid)
    normal = np.cross(planes[0].row, planes[0].column)
    normal /= np.linalg.norm(normal)
    order = sorted(range(len(datasets)), key=lambda i: float(planes[i].position @ normal))
    sorted_datasets = [datasets[i] for i in order]
    positions = np.array([planes[i].position for i in order])
    slice_spacing = _check_stacking(sorted_datasets, positions, normal, planes[0], series_uid, spacing_tolerance, gap_factor)
    array = _decode_volume(sorted_datasets, series_uid)
    first = planes[order[0]]
    geometry = Geometry(
        origin=_vec(positions[0]),
        spacing=(first.column_spacing, first.row_spacing, slice_spacing),
        direction=(_vec(first.row), _vec(first.column), _vec(normal)),
        shape=(len(sorted_datasets), first.rows, first.columns),
    )
    reference = sorted_datasets[0]
    volume = Volume(
        array=array,
        geometry=geometry,
        series_instance_uid=series_uid,
        study_instance_uid=str(reference.StudyInstanceUID),
        frame_of_reference_uid=str(reference.FrameOfReferenceUID),
        modality=modality,
        sop_instance_uids=[str(ds.SOPInstanceUID) for ds in sorted_datasets],
        sop_class_uid=str(reference.SOPClassUID),
    )
    logger.info(
        "Assembled series %s: %d slices of %dx%d, spacing %s mm, dtype %s",
        series_uid, *geometry.shape, tuple(round(s, 4) for s in geometry.spacing), array.dtype,
    )
    return volume


@dataclass(frozen=True)
class _Plane:
    """Image Plane module values of one slice (PS3.3 C.7.6.2)."""

    row: np.ndarray
    column: np.ndarray
    position: np.ndarray
    row_spacing: float
    column_spacing: float
    rows: int
    columns: int


def _vec(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


def _describe(dataset: Dataset) -> str:
    """Name one instance in a message: its SOP Instance UID and file, when known."""
    name = f"instance {dataset.get('SOPInstanceUID') or '<no SOP Instance UID>'}"
    filename = getattr(dataset, "filename", None)
    return f"{name} ({filename})" if isinstance(filename, str) and filename else name


def _check_identity(datasets: Sequence[Dataset]) -> str:
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
                f"{len(lacking)} instance(s) lack {keyword}, e.g. {_describe(lacking[0])}.",
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


def _check_modality(datasets: Sequence[Dataset], series_uid: str, required: str | None) -> str:
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


def _read_plane(dataset: Dataset, series_uid: str) -> _Plane:
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise SeriesRefusedError(
            series_uid, "multi-frame",
            f"{_describe(dataset)} is a multi-frame image; only single-frame slices are stacked here.",
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
            f"{_describe(dataset)} lacks a usable Image Plane module "
            f"(Image Orientation/Position (Patient), Pixel Spacing, Rows, Columns): {error}.",
            "The slice cannot be placed in patient space; re-export the series with its geometry tags.",
        ) from error
    if orientation.shape != (6,) or position.shape != (3,) or row_spacing <= 0 or column_spacing <= 0:
        raise SeriesRefusedError(
            series_uid, "no-geometry",
            f"{_describe(dataset)} has malformed geometry: orientation {orientation.tolist()}, "
            f"position {position.tolist()}, pixel spacing {[row_spacing, column_spacing]}.",
            "Re-export the series with valid Image Plane tags.",
        )
    row, column = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(column) - 1) > 1e-3 or abs(row @ column) > 1e-3:
        raise SeriesRefusedError(
            series_uid, "no-geometry",
            f"{_describe(dataset)} has an Image Orientation (Patient) {orientation.tolist()} whose "
            "cosines are not two orthogonal unit vectors.",
            "Re-export the series with valid Image Plane tags.",
        )
    return _Plane(row, column, position, row_spacing, column_spacing, rows, columns)


def _check_same_plane(datasets: Sequence[Dataset], planes: list[_Plane], series_uid: str) -> None:
    reference = planes[0]
    for dataset, plane in zip(datasets, planes, strict=True):
        deviation = max(np.abs(plane.row - reference.row).max(), np.abs(plane.column - reference.column).max())
        if deviation > _ORIENTATION_TOLERANCE:
            raise SeriesRefusedError(
                series_uid, "mixed-orientation",
                f"{_describe(dataset)} is oriented {np.r_[plane.row, plane.column].round(5).tolist()} but "
                f"{_describe(datasets[0])} {np.r_[reference.row, reference.column].round(5).tolist()}; "
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
                f"{_describe(dataset)} is {plane.rows}x{plane.columns} with pixel spacing "
                f"{[plane.row_spacing, plane.column_spacing]} mm, {_describe(datasets[0])} is "
                f"{reference.rows}x{reference.columns} with {[reference.row_spacing, reference.column_spacing]} mm.",
                "All slices of a volume need the same matrix and pixel spacing; pick a series reconstructed in one field of view.",
            )


def _check_stacking(
    datasets: list[Dataset],
    positions: np.ndarray,
    normal: np.ndarray,
    plane: _Plane,
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
            f"(Gantry/Detector Tilt of {_describe(tilted[0])}).",
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
            f"{duplicates.size} pair(s) of slices share a position; e.g. {_describe(datasets[k])} and "
            f"{_describe(datasets[k + 1])} both lie at {distances[k]:.2f} mm along the slice normal.",
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
            f"{_describe(datasets[k])} and {_describe(datasets[k + 1])}, where slices are "
            f"{median:.2f} mm apart.",
            "Fetch the complete series again from the PACS (or ask for it to be resent from the scanner).",
        )
    deviation = np.abs(steps_along - median) / median
    if deviation.max() > spacing_tolerance:
        k = int(np.argmax(deviation))
        raise SeriesRefusedError(
            series_uid, "uneven-spacing",
            f"Slice spacing varies: {steps_along[k]:.3f} mm between {_describe(datasets[k])} and "
            f"{_describe(datasets[k + 1])} against a median of {median:.3f} mm "
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
        f"The series has a single slice ({_describe(dataset)}) without Slice Thickness, so its depth is unknown.",
        "Use a series with several slices.",
    )


def _decode_volume(datasets: list[Dataset], series_uid: str) -> np.ndarray:
    """Decode every slice and apply its Modality LUT (Rescale Slope/Intercept, PS3.3 C.11.1.1.2)."""
    raw = [_decode_slice(ds, series_uid) for ds in datasets]
    rescales = [_rescale(ds) for ds in datasets]
    integral = all(slope == 1.0 and float(intercept).is_integer() for slope, intercept in rescales)
    if integral:
        int16 = np.iinfo(np.int16)
        low = min(int(a.min()) + int(b) for a, (_, b) in zip(raw, rescales, strict=True))
        high = max(int(a.max()) + int(b) for a, (_, b) in zip(raw, rescales, strict=True))
        integral = int16.min <= low and high <= int16.max
    out = np.empty((len(raw), *raw[0].shape), dtype=np.int16 if integral else np.float32)
    for k, (pixels, (slope, intercept)) in enumerate(zip(raw, rescales, strict=True)):
        if integral:
            out[k] = pixels.astype(np.int32) + int(intercept)
        else:
            out[k] = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return out


def _rescale(dataset: Dataset) -> tuple[float, float]:
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if slope is None or intercept is None:
        # Absent rescale means stored values are already output values (identity Modality LUT).
        logger.warning("%s has no Rescale Slope/Intercept; using stored values as is", _describe(dataset))
        return 1.0, 0.0
    return float(slope), float(intercept)


def _decode_slice(dataset: Dataset, series_uid: str) -> np.ndarray:
    file_meta = getattr(dataset, "file_meta", None)
    syntax = UID(str(file_meta.get("TransferSyntaxUID", "")) if file_meta is not None else "")
    syntax_name = f"{syntax.name} ({syntax})" if syntax else "an unknown transfer syntax"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as error:
        raise SeriesRefusedError(
            series_uid, "undecodable-pixels",
            f"{_describe(dataset)} is encoded in {syntax_name}, which pydicom has no decoder for.",
            "Ask the PACS to send the series in Explicit VR Little Endian (transcoding), then retry.",
        ) from error
    if not decoder.is_available:
        raise SeriesRefusedError(
            series_uid, "undecodable-pixels",
            f"{_describe(dataset)} is encoded in {syntax_name} and no decoder for it is installed.",
            f"Install {_CODEC_PACKAGES.get(str(syntax), 'a pydicom decoding plugin for it')}, "
            "or ask the PACS to send the series uncompressed.",
        )
    try:
        pixels, _ = decoder.as_array(dataset, index=0)
    # Decoding plugins signal broken or truncated data with these (pydicom wraps plugin
    # errors in RuntimeError; native data that is too short raises ValueError).
    except (RuntimeError, ValueError, AttributeError, KeyError, TypeError) as error:
        codec_advice = (
            f" If it persists, check that {_CODEC_PACKAGES.get(str(syntax), 'a decoder for it')} is installed."
            if syntax.is_compressed
            else ""
        )
        raise SeriesRefusedError(
            series_uid, "undecodable-pixels",
            f"The pixel data of {_describe(dataset)} ({syntax_name}) could not be decoded: "
            f"{_one_line(str(error)).rstrip('.')}.",
            f"The file is probably truncated or corrupt: fetch the series again.{codec_advice}",
        ) from error
    if pixels.shape != (int(dataset.Rows), int(dataset.Columns)):
        raise SeriesRefusedError(
            series_uid, "undecodable-pixels",
            f"{_describe(dataset)} decoded to shape {pixels.shape}, not one grey-scale "
            f"{int(dataset.Rows)}x{int(dataset.Columns)} image.",
            "Use a grey-scale CT series (one sample per pixel).",
        )
    return pixels


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines)[:500] if lines else "no reason given"

