"""Voxel grid geometry of a CT volume in the DICOM patient coordinate system.

The patient coordinate system is LPS (x towards the patient's left, y towards posterior,
z towards head), in millimetres, as defined for Image Position (Patient) and Image
Orientation (Patient) in DICOM PS3.3 C.7.6.2.1.1.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

Vec3 = tuple[float, float, float]

_UNIT_TOLERANCE = 1e-3


class Geometry(BaseModel):
    """Grid of a (slices, rows, columns) array placed in patient space.

    Indices are written (i, j, k) = (column, row, slice), the order DICOM PS3.3
    C.7.6.2.1.1 uses for the in-plane mapping ``P = S + X*di*i + Y*dj*j``, extended with
    the slice axis ``Z*dk*k``.

    Attributes:
        origin: patient position (mm) of voxel [0, 0, 0], i.e. the Image Position
            (Patient) of slice 0.
        spacing: (column spacing = PixelSpacing[1], row spacing = PixelSpacing[0],
            slice spacing), mm.
        direction: (row direction X = IOP[0:3], column direction Y = IOP[3:6], slice
            direction Z = the unit vector along which the slice index increases).
        shape: (slices, rows, columns), the shape of the array it describes.
    """

    model_config = ConfigDict(frozen=True)

    origin: Vec3
    spacing: Vec3
    direction: tuple[Vec3, Vec3, Vec3]
    shape: tuple[int, int, int]

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, value: Vec3) -> Vec3:
        if any(s <= 0 for s in value):
            raise ValueError(f"voxel spacing must be positive, got {value}")
        return value

    @field_validator("direction")
    @classmethod
    def _unit_directions(cls, value: tuple[Vec3, Vec3, Vec3]) -> tuple[Vec3, Vec3, Vec3]:
        norms = np.linalg.norm(np.asarray(value, dtype=float), axis=1)
        if np.any(np.abs(norms - 1.0) > _UNIT_TOLERANCE):
            raise ValueError(f"direction vectors must have unit length, got norms {norms.tolist()}")
        return value

    @field_validator("shape")
    @classmethod
    def _positive_shape(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(n <= 0 for n in value):
            raise ValueError(f"shape must be positive in every axis, got {value}")
        return value

    def affine(self) -> np.ndarray:
        """4x4 matrix mapping (column i, row j, slice k, 1) to patient (x, y, z, 1) in LPS mm."""
        matrix = np.eye(4)
        axes = np.asarray(self.direction, dtype=float) * np.asarray(self.spacing, dtype=float)[:, None]
        matrix[:3, :3] = axes.T
        matrix[:3, 3] = self.origin
        return matrix

    def index_to_patient(self, ijk: np.ndarray) -> np.ndarray:
        """Map (N, 3) or (3,) indices (column, row, slice; fractional allowed) to LPS mm."""
        points = np.asarray(ijk, dtype=float)
        flat = np.atleast_2d(points)
        out = flat @ self.affine()[:3, :3].T + self.affine()[:3, 3]
        return out.reshape(points.shape)

    def patient_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Map (N, 3) or (3,) LPS mm points to fractional (column, row, slice) indices."""
        points = np.asarray(xyz, dtype=float)
        flat = np.atleast_2d(points)
        inverse = np.linalg.inv(self.affine())
        out = flat @ inverse[:3, :3].T + inverse[:3, 3]
        return out.reshape(points.shape)

    def slice_position(self, k: int) -> Vec3:
        """Image Position (Patient) of slice k, the position of its first transmitted pixel."""
        if not 0 <= k < self.shape[0]:
            raise IndexError(f"slice index {k} is outside the volume's {self.shape[0]} slices")
        x, y, z = self.index_to_patient(np.array([0.0, 0.0, float(k)]))
        return (float(x), float(y), float(z))
