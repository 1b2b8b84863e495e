"""The one interface every segmentation engine implements, and the structures it knows.

`segment(volume, targets)` returns boolean masks on the volume's own voxel grid (same shape,
same geometry), one per requested structure, each with a confidence. Engines never resample
their output into another grid: writers rely on the source geometry. Engines add only the
flags that they alone can raise (a model's own doubts); measurements and the QA flags are
added once, afterwards, by `tools.segmentation.qa.assess`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # only for the engine protocol: naming the engines must not load the DICOM stack
    from tools.imaging.volume import Volume


class StructureSpec(BaseModel):
    """A structure the agent can contour, with the codes every output uses for it.

    `snomed_code` is the SNOMED CT concept (DICOM coding scheme designator "SCT") used for
    the SEG segment's anatomic region / property type and the SR finding site.
    """

    model_config = ConfigDict(frozen=True)

    key: str
    roi_name: str
    display: str
    snomed_code: str
    snomed_meaning: str
    color_rgb: tuple[int, int, int]
    rt_roi_type: Literal["ORGAN", "EXTERNAL"] = "ORGAN"
    """RT ROI Interpreted Type (PS3.3 C.8.8.8): EXTERNAL is the body outline planning systems dose within"""


STRUCTURES: dict[str, StructureSpec] = {
    s.key: s
    for s in (
        StructureSpec(
            key="left-lung",
            roi_name="Lung_L",
            display="Left lung",
            snomed_code="44029006",
            snomed_meaning="Left lung",
            color_rgb=(0, 151, 206),
        ),
        StructureSpec(
            key="right-lung",
            roi_name="Lung_R",
            display="Right lung",
            snomed_code="3341006",
            snomed_meaning="Right lung",
            color_rgb=(255, 140, 0),
        ),
        StructureSpec(
            key="heart",
            roi_name="Heart",  # TG-263
            display="Heart",
            snomed_code="80891009",
            snomed_meaning="Heart",
            color_rgb=(220, 40, 60),
        ),
        StructureSpec(
            key="liver", roi_name="Liver", display="Liver", snomed_code="10200004", snomed_meaning="Liver",
            color_rgb=(150, 75, 0),
        ),
        StructureSpec(
            key="left-ventricle", roi_name="Ventricle_L", display="Left ventricle", snomed_code="87878005",
            snomed_meaning="Left cardiac ventricular structure", color_rgb=(200, 0, 120),
        ),
        StructureSpec(
            key="prostate", roi_name="Prostate", display="Prostate", snomed_code="41216001",
            snomed_meaning="Prostate", color_rgb=(90, 160, 255),
        ),
        StructureSpec(
            key="body",
            roi_name="External",  # TG-263
            display="Body outline",
            snomed_code="38266002",
            snomed_meaning="Entire body as a whole",
            color_rgb=(0, 200, 83),
            rt_roi_type="EXTERNAL",
        ),
    )
}

TARGET_ALIASES: dict[str, tuple[str, ...]] = {"lungs": ("left-lung", "right-lung")}


class UnknownTargetError(ValueError):
    """A requested target is not a structure this system knows."""


def resolve_targets(targets: Sequence[str]) -> list[StructureSpec]:
    """Expand aliases ("lungs") and refuse unknown names with the list of known ones."""
    keys: list[str] = []
    for raw in targets:
        name = raw.strip().lower()
        expanded = TARGET_ALIASES.get(name, (name,))
        for key in expanded:
            if key not in STRUCTURES:
                known = ", ".join(sorted([*STRUCTURES, *TARGET_ALIASES]))
                raise UnknownTargetError(f"unknown segmentation target '{raw}'. Known targets: {known}.")
            if key not in keys:
                keys.append(key)
    if not keys:
        raise UnknownTargetError("no segmentation target given; ask for e.g. 'lungs'.")
    return [STRUCTURES[k] for k in keys]


class FlagPlanes(BaseModel):
    """Where a flag's finding lies: planes ``first`` to ``last`` (inclusive) along array ``axis`` of the
    volume (0 slices, 1 rows, 2 columns), so the reviewer's viewer can jump there."""

    axis: int = Field(ge=0, le=2)
    first: int = Field(ge=0)
    last: int = Field(ge=0)


class QAFlag(BaseModel):
    """A plausibility finding that travels with the result to the approver."""

    code: str
    severity: Literal["info", "warning", "fail"]
    structure: str | None
    message: str
    planes: FlagPlanes | None = None
    """where to look, when the finding has a place (the message says it in words too)"""


class StructureMeasurements(BaseModel):
    """Size, density and extent of one mask. HU statistics are None for an empty mask."""

    volume_ml: float
    voxel_count: int
    mean_hu: float | None
    p5_hu: float | None
    p50_hu: float | None
    p95_hu: float | None
    bbox_index: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None
    """(min, max) inclusive per array axis: (slice, row, column)"""
    bbox_mm: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] | None
    """(min, max) per patient axis (x, y, z) in LPS mm, over the centres of the boxed voxels"""
    n_components: int
    """3D connected components, 26-connectivity (on a radiograph: 8-connected in its plane)"""
    area_mm2: float | None = None
    """a radiograph's structure: its projected area in the image plane (volume_ml is then 0)"""


@dataclass
class StructureMask:
    structure: StructureSpec
    mask: np.ndarray
    """bool, shape == volume.array.shape"""
    confidence: float
    flags: list[QAFlag] = field(default_factory=list)
    measurements: StructureMeasurements | None = None
    """set by `qa.assess`; None on a result that was not assessed yet"""


class ResultEdit(BaseModel):
    """A reviewer's correction of an AI result (tools/review/edits.py): who, when, and what it corrects.

    ``digest`` names the edited version: it enters every derived UID (a corrected RTSTRUCT is a
    new object, never the AI's under its UID), and chains over rounds of edits.
    """

    model_config = ConfigDict(frozen=True)

    digest: str
    edits_sha256: str
    edit_count: int
    editor_id: str
    editor_name: str
    editor_issuer: str
    edited_at: datetime
    derived_from_result_uid: str
    """the result UID of the AI's own, unedited result"""


@dataclass
class SegmentationResult:
    engine: str
    engine_version: str
    structures: list[StructureMask]
    flags: list[QAFlag] = field(default_factory=list)
    """Flags about the whole result (not tied to one structure)."""
    seconds: float = 0.0
    assessed: bool = False
    """True once `qa.assess` measured every structure and added the QA flags (it does so once)."""
    parameters: dict[str, str] = field(default_factory=dict)
    """The settings that shaped this result (thresholds, bundle, prompts), name -> value as text.

    Written into the SR's and SEG's algorithm identification (TID 4019, IHE AI Results), sorted
    by name: values must be fixed by the input and the engine (no times, paths or devices), or
    the approved bytes would change between two builds of the same result."""
    edit: ResultEdit | None = None
    """Set when a reviewer corrected the masks: the objects are then SEMIAUTOMATIC, with new UIDs."""

    def all_flags(self) -> list[QAFlag]:
        """Every flag: those about the whole result, then each structure's, in structure order."""
        return [*self.flags, *(f for s in self.structures for f in s.flags)]


class SegmentationEngine(Protocol):
    name: str
    version: str

    def segment(self, volume: Volume, targets: Sequence[str]) -> SegmentationResult: ...


class EngineError(RuntimeError):
    """An engine could not produce a result; the message names the engine and the series."""
