"""What the phantom is: its spec, its tissues, the generated arrays and the series geometry.

Geometry follows DICOM PS3.3 C.7.6.2 (Image Plane Module) in the patient-based LPS
frame: +x is the patient's left, +y posterior, +z superior.

- HFS: ImageOrientationPatient [1,0,0, 0,1,0]; columns run to the patient's left, rows
  run posterior; the slice normal is +z.
- FFS: ImageOrientationPatient [-1,0,0, 0,1,0]; columns run to the patient's right; the
  slice normal is -z. This valid orientation is chosen on purpose: a loader that ignores
  the orientation tags puts the lungs on the wrong side and fails the tests.

Array order (``Phantom.hu``, ``left_lung``, ``right_lung``, ``labels``): index
``[k, r, c]`` is row ``r``, column ``c`` of the k-th slice when the written slices are
sorted by ImagePositionPatient projected on the slice normal (row direction x column
direction), ascending, which is the order a geometry-based loader gives. So k = 0 is the
most inferior slice for HFS and the most superior slice for FFS. Instance Number 1 is
always the most superior slice (a cranio-caudal scan).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

RESCALE_INTERCEPT = -1024
# The HU range 12-bit unsigned storage holds with this intercept: the anatomy clips to it,
# the writer checks it.
MIN_HU = RESCALE_INTERCEPT
MAX_HU = 4095 + RESCALE_INTERCEPT

# Patient z of the most superior slice: arbitrary, non-zero so that loaders must use IPP.
_TOP_SLICE_Z_MM = -20.0


class Tissue(IntEnum):
    """Label of every voxel in ``Phantom.labels``."""

    OUTSIDE_AIR = 0
    TABLE_SHELL = 1
    TABLE_CORE = 2
    FAT = 3
    SOFT_TISSUE = 4
    BONE_CORTICAL = 5
    BONE_MEDULLARY = 6
    LUNG_LEFT = 7
    LUNG_RIGHT = 8
    VESSEL_LEFT = 9
    VESSEL_RIGHT = 10
    AIRWAY = 11
    HEART = 12
    AORTA = 13
    LIVER = 14
    BOWEL_GAS = 15


class PhantomSpec(BaseModel):
    """What to generate. The same spec always gives the same pixels and UIDs."""

    model_config = ConfigDict(frozen=True)

    slices: int = Field(default=120, ge=8, le=2000)
    rows: int = Field(default=512, ge=32, le=4096)
    columns: int = Field(default=512, ge=32, le=4096)
    pixel_spacing_mm: float = Field(default=0.78, gt=0)
    slice_thickness_mm: float = Field(default=2.5, gt=0)
    seed: int = 0
    patient_position: Literal["HFS", "FFS"] = "HFS"
    noise_hu: float = Field(default=12.0, ge=0)
    patient_id: str = "PHANTOM-0001"
    patient_name: str = "Phantom^Chest"
    study_description: str = "CT CHEST (synthetic phantom)"
    study_instance_uid: str | None = Field(
        default=None, description="derived from the whole spec when None (idempotent seeding)"
    )


@dataclass
class Phantom:
    """A generated phantom; arrays are indexed [k, row, column] (see the module docstring)."""

    hu: np.ndarray  # int16, Hounsfield units
    left_lung: np.ndarray  # bool, exact mask of the left lung cavity (vessels included)
    right_lung: np.ndarray  # bool, exact mask of the right lung cavity
    spec: PhantomSpec
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: list[str]  # one per slice, in array order
    labels: np.ndarray  # uint8 Tissue codes, same shape and order


@dataclass(frozen=True)
class PhantomGeometry:
    """DICOM Image Plane attributes of the written series, in array order."""

    image_orientation_patient: tuple[float, float, float, float, float, float]
    image_positions_patient: list[tuple[float, float, float]]
    pixel_spacing_mm: tuple[float, float]  # (row spacing, column spacing) as in PixelSpacing
    instance_numbers: list[int]


def phantom_geometry(spec: PhantomSpec) -> PhantomGeometry:
    """Orientation, per-slice positions (array order) and instance numbers for ``spec``."""
    dx = spec.pixel_spacing_mm
    half_x = (spec.columns - 1) / 2.0 * dx
    y_first_row = -(spec.rows - 1) / 2.0 * dx
    depth = np.arange(spec.slices) * spec.slice_thickness_mm
    if spec.patient_position == "HFS":
        iop = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        x_first_column = -half_x
        z = _TOP_SLICE_Z_MM - depth[::-1]  # ascending along the +z normal
        instances = list(range(spec.slices, 0, -1))
    else:
        iop = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        x_first_column = half_x
        z = _TOP_SLICE_Z_MM - depth  # descending z is ascending along the -z normal
        instances = list(range(1, spec.slices + 1))
    positions = [(round(x_first_column, 4), round(y_first_row, 4), round(float(zk), 4)) for zk in z]
    return PhantomGeometry(
        image_orientation_patient=iop,
        image_positions_patient=positions,
        pixel_spacing_mm=(dx, dx),
        instance_numbers=instances,
    )

