"""The text report: what the engine found, in words a radiologist signs off.

Built only from identifiers, measurements and QA flags: no patient name, no free text copied
from DICOM or FHIR (that text is untrusted and stays out of reports and prompts alike).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from tools.segmentation.base import QAFlag


class ReportStructure(BaseModel):
    display: str
    volume_ml: float
    mean_hu: float
    n_components: int
    area_mm2: float | None = None
    """on a radiograph: the projected area (volume and density mean nothing there)"""


class ReportInput(BaseModel):
    study_instance_uid: str
    series_instance_uid: str
    series_images: int
    slice_spacing_mm: float
    engine: str
    engine_version: str
    structures: list[ReportStructure]
    flags: list[QAFlag]
    modality: str = "CT"
    cardiothoracic_ratio: float | None = None


def conclusion(report: ReportInput) -> str:
    """One sentence for DiagnosticReport.conclusion."""
    parts = [_size(s) for s in report.structures]
    if report.cardiothoracic_ratio is not None:
        parts.append(f"cardiothoracic ratio {report.cardiothoracic_ratio:.2f}")
    warnings = [f for f in report.flags if f.severity in ("warning", "fail")]
    qa = f"; {len(warnings)} QA finding(s) to review" if warnings else "; no QA findings"
    what = "Automatic segmentation" if report.modality in ("CR", "DX") else "Automatic contours"
    return f"{what} ({report.engine} {report.engine_version}): {', '.join(parts)}{qa}."


def _size(s: ReportStructure) -> str:
    if s.area_mm2 is not None:
        return f"{s.display.lower()} {s.area_mm2 / 100:.0f} cm2 projected"
    return f"{s.display.lower()} {s.volume_ml:.0f} mL"


def _radiograph_report(report: ReportInput) -> list[str]:
    lines = [
        "AI CHEST RADIOGRAPH SEGMENTATION REPORT",
        "",
        f"Study Instance UID:  {report.study_instance_uid}",
        f"Image used:          {report.series_instance_uid} ({report.modality}, frontal)",
        f"Algorithm:           {report.engine} {report.engine_version} (automatic segmentation)",
        "",
        "Structures (areas projected on the image plane):",
    ]
    lines += [
        f"  {s.display:<12} {(s.area_mm2 or 0.0) / 100:>9.1f} cm2   {s.n_components} component(s)"
        for s in report.structures
    ]
    if report.cardiothoracic_ratio is not None:
        lines += ["", f"Cardiothoracic ratio: {report.cardiothoracic_ratio:.2f} (transverse diameters)"]
    return lines


def render_report(report: ReportInput) -> str:
    """The full plain-text report (DiagnosticReport.presentedForm)."""
    if report.modality in ("CR", "DX"):
        lines = _radiograph_report(report)
        lines += ["", "Quality checks:"]
        lines += [f"  [{f.severity.upper()}] {f.message}" for f in report.flags] or ["  none raised"]
        lines += ["", f"Conclusion: {conclusion(report)}"]
        return "\n".join(lines) + "\n"
    lines = [
        "AI LUNG CONTOURING REPORT",
        "",
        f"Study Instance UID:  {report.study_instance_uid}",
        f"Series used:         {report.series_instance_uid}",
        f"                     {report.series_images} images, {report.slice_spacing_mm:.2f} mm slice spacing",
        f"Algorithm:           {report.engine} {report.engine_version} (automatic contours)",
        "",
        "Structures:",
    ]
    lines += [
        f"  {s.display:<12} {s.volume_ml:>9.1f} mL   mean {s.mean_hu:>6.0f} HU   {s.n_components} component(s)"
        for s in report.structures
    ]
    lines += ["", "Quality checks:"]
    lines += [f"  [{f.severity.upper()}] {f.message}" for f in report.flags] or ["  none raised"]
    lines += ["", f"Conclusion: {conclusion(report)}"]
    return "\n".join(lines) + "\n"


def flags_of(flags: Sequence[QAFlag], severity: str) -> list[QAFlag]:
    return [f for f in flags if f.severity == severity]
