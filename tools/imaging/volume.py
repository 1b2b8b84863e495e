"""Assemble a CT series into a geometry-checked 3D volume in Hounsfield units.

Slices are placed by the Image Plane module (DICOM PS3.3 C.7.6.2): they are sorted by the
projection of Image Position (Patient) onto the slice normal (row direction x column
direction of Image Orientation (Patient)), never by Instance Number, which PS3.3 does not
tie to position. A series that cannot be stacked into one regular grid is refused with a
:class:`SeriesRefusedError` whose reason a radiologist can read; nothing is resampled or
guessed. The checks live in series_checks.py, pixel decoding in pixels.py.
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

from tools.imaging.geometry import Geometry
from tools.imaging.pixels import decode_volume
from tools.imaging.series_checks import (
    SeriesRefusedError,
    check_identity,
    check_modality,
    check_same_plane,
    check_stacking,
    read_plane,
)

__all__ = [
    "Geometry",
    "SeriesRefusedError",
    "Volume",
    "assemble_volume",
    "group_by_series",
    "read_series_dir",
]

logger = logging.getLogger(__name__)

_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


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
    series_uid = check_identity(datasets)
    modality = check_modality(datasets, series_uid, required_modality)
    planes = [read_plane(ds, series_uid) for ds in datasets]
    check_same_plane(datasets, planes, series_uid)
    normal = np.cross(planes[0].row, planes[0].column)
    normal /= np.linalg.norm(normal)
    order = sorted(range(len(datasets)), key=lambda i: float(planes[i].position @ normal))
    sorted_datasets = [datasets[i] for i in order]
    positions = np.array([planes[i].position for i in order])
    slice_spacing = check_stacking(sorted_datasets, positions, normal, planes[0], series_uid, spacing_tolerance, gap_factor)
    array = decode_volume(sorted_datasets, series_uid)
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


def _vec(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))

