"""Routing rules: which received series become which work (the engine), and which none.

A rule matches on the series' Modality, Body Part Examined and Series Description (a regular
expression, case-insensitive); the first rule that matches decides. A series no rule matches is
kept in the inbox and logged, never processed: the department decides what the agent may touch.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, field_validator
from pydicom import Dataset

from tools.segmentation.catalog import EngineName


class RoutingRule(BaseModel):
    """Series of `modality` (and the body part / description, when given) go to `engine` (the lungs)."""

    name: str = Field(min_length=1, description="shown in logs and on the job, e.g. 'chest CT lungs'")
    modality: str = Field(min_length=1, description="DICOM Modality (0008,0060), e.g. CT")
    body_parts: list[str] = Field(default_factory=list, description="Body Part Examined values (any); empty: any")
    series_description: str | None = Field(default=None, description="regular expression, case-insensitive")
    engine: EngineName = "lung-threshold"

    @field_validator("series_description")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"series_description {value!r} is not a regular expression: {exc}") from exc
        return value

    def matches(self, ds: Dataset) -> bool:
        if str(ds.get("Modality", "")).upper() != self.modality.upper():
            return False
        body_part = str(ds.get("BodyPartExamined", "") or "").upper()
        if self.body_parts and body_part not in {b.upper() for b in self.body_parts}:
            return False
        description = str(ds.get("SeriesDescription", "") or "")
        return self.series_description is None or re.search(self.series_description, description, re.IGNORECASE) is not None


DEFAULT_RULES = [
    RoutingRule(name="chest CT lungs", modality="CT", body_parts=["CHEST", "LUNG", "THORAX"]),
    RoutingRule(name="CT described as chest or lung", modality="CT", series_description=r"chest|lung|thora"),
]


def route(ds: Dataset, rules: list[RoutingRule]) -> RoutingRule | None:
    """The first rule that matches the series of `ds` (any of its instances), or None."""
    return next((rule for rule in rules if rule.matches(ds)), None)
