"""Preflight: refuse, before segmenting, a volume the lung engines cannot contour well."""

from __future__ import annotations

from pydantic import BaseModel

from tools.imaging.orientation import nearest_directions
from tools.imaging.volume import Volume


class PreflightLimits(BaseModel):
    max_slice_spacing_mm: float = 5.0
    max_pixel_spacing_mm: float = 1.5
    min_extent_mm: float = 100.0
    min_matrix: int = 128


class PreflightError(ValueError):
    """The volume is not fit for contouring; the message says why and what to do."""


def _grid_problems(volume: Volume, limits: PreflightLimits) -> list[str]:
    """What of ``volume``'s grid is outside ``limits``, one phrase each (no extent rule when its minimum is 0)."""
    col_mm, row_mm, slice_mm = volume.geometry.spacing
    slices, rows, columns = volume.array.shape
    problems: list[str] = []
    if slice_mm > limits.max_slice_spacing_mm:
        problems.append(f"slice spacing {slice_mm:.2f} mm is above {limits.max_slice_spacing_mm:g} mm")
    if max(col_mm, row_mm) > limits.max_pixel_spacing_mm:
        problems.append(f"pixel spacing {max(col_mm, row_mm):.2f} mm is above {limits.max_pixel_spacing_mm:g} mm")
    extent = slice_mm * max(slices - 1, 0)
    if extent < limits.min_extent_mm:
        problems.append(f"the series covers only {extent:.0f} mm (needs {limits.min_extent_mm:g} mm for the lungs)")
    if min(rows, columns) < limits.min_matrix:
        problems.append(f"matrix {rows}x{columns} is below {limits.min_matrix}")
    return problems


def preflight(volume: Volume, limits: PreflightLimits | None = None) -> None:
    problems = _grid_problems(volume, limits or PreflightLimits())
    if problems:
        raise PreflightError(
            f"series {volume.series_instance_uid} failed preflight: {'; '.join(problems)}. "
            "Use a thin-slice chest CT reconstruction of this study."
        )


class RadiographLimits(BaseModel):
    max_pixel_spacing_mm: float = 1.5
    min_matrix: int = 128


def preflight_radiograph(volume: Volume, limits: RadiographLimits | None = None) -> None:
    """Refuse a radiograph the engines cannot segment well: not frontal, too coarse, too small."""
    limits = limits or RadiographLimits()
    col_mm, row_mm, _ = volume.geometry.spacing
    _, rows, columns = volume.array.shape
    problems: list[str] = []
    if nearest_directions(volume.geometry)[0] not in ("A", "P"):
        problems.append("it is not a frontal view (its Patient Orientation makes it a lateral)")
    if max(col_mm, row_mm) > limits.max_pixel_spacing_mm:
        problems.append(f"pixel spacing {max(col_mm, row_mm):.2f} mm is above {limits.max_pixel_spacing_mm:g} mm")
    if min(rows, columns) < limits.min_matrix:
        problems.append(f"matrix {rows}x{columns} is below {limits.min_matrix}")
    if problems:
        raise PreflightError(
            f"radiograph series {volume.series_instance_uid} failed preflight: {'; '.join(problems)}. "
            "Use the frontal (PA or AP) chest radiograph of this study at its full resolution."
        )


def preflight_mr(volume: Volume, limits: PreflightLimits | None = None) -> None:
    """Refuse an MR volume too coarse or too small to segment (MedImageParse's MR targets; no lung coverage rule)."""
    problems = _grid_problems(
        volume, limits or PreflightLimits(max_slice_spacing_mm=10.0, max_pixel_spacing_mm=2.5, min_extent_mm=0.0)
    )
    if problems:
        raise PreflightError(
            f"MR series {volume.series_instance_uid} failed preflight: {'; '.join(problems)}. "
            "Use a finer MR series of this study."
        )
