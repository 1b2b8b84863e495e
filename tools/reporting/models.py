"""A drafted report as data: findings, each with its boxes on the frontal image, and what was sent."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Box(BaseModel):
    """A rectangle on the frontal radiograph, in its pixels: rows and columns, inclusive, 0-based."""

    model_config = ConfigDict(frozen=True)

    row_min: int = Field(ge=0)
    column_min: int = Field(ge=0)
    row_max: int = Field(ge=0)
    column_max: int = Field(ge=0)


class DraftFinding(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    boxes: tuple[Box, ...] = ()


class ReportContext(BaseModel):
    """The only text that leaves the hospital with the images: the sections a report starts from."""

    model_config = ConfigDict(frozen=True)

    indication: str = ""
    technique: str = ""
    comparison: str = "None."


class DraftReport(BaseModel):
    """A model's draft findings for one study: shown on the approval card, written only after approval."""

    model: str
    model_version: str
    endpoint: str
    """the scoring endpoint's host (never its path or key): which deployment drafted it"""
    frontal_sop_instance_uid: str
    lateral_sop_instance_uid: str | None
    context: ReportContext
    findings: list[DraftFinding]
    requests_sent: int
    bytes_sent: int

    def text(self) -> str:
        """The findings as report text, one per line."""
        return "\n".join(f.text for f in self.findings)
