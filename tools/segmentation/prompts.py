"""What MedImageParse is asked for each structure, and in which CT window it is shown.

MedImageParse is a text-prompted model: it segments whatever a short English phrase names
("left lung"), in images windowed the way its training data was. The table below is the
one place that decides both. A clinician can read and extend it: one row per structure and
modality; columns are separated by ``|``.

- target: the structure key the rest of the system uses (tools/segmentation/base.py).
- modality: DICOM Modality (PS3.3 C.7.3.1.1.1), e.g. CT.
- body parts: words of DICOM Body Part Examined (PS3.16 CID 4031, and common vendor values)
  for scans the structure lies in; a series whose Body Part Examined contains one of them
  is accepted (ABD matches ABDOMEN, CHESTABDOMEN and ABDOMENPELVIS; CHEST matches
  CHEST_TO_PELVIS). A series without a Body Part Examined is accepted too.
- prompt: the phrase sent to the model. Use the model's own vocabulary (BiomedParse target
  list: "left lung", "liver", "pancreas", ...); free paraphrases segment worse.
- window: one of WINDOWS below, by name.
- category: the class MedImageParse should answer in ``text_features`` for this prompt (one
  of its 16 categories: liver, lung, kidney, pancreas, heart anatomies, brain anatomies,
  eye anatomies, vessel, other organ, tumor, infection, other lesion, fluid disturbance,
  other abnormality, histology structure, other). A different answer is flagged for review.

Only targets that tools/segmentation/base.py STRUCTURES also knows can be segmented by the
engine (it needs their codes and colours); a new row needs a StructureSpec there too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from tools.segmentation.base import TARGET_ALIASES, UnknownTargetError


class Window(BaseModel):
    """A display window: values below ``low_hu`` are black, above ``high_hu`` white.

    In Hounsfield units for CT. A ``presentation`` window applies to values already through the
    image's own grayscale pipeline (a radiograph's VOI transform, tools/imaging/projection.py;
    0.0 black .. 1.0 white), so its bounds are fractions of that range, not HU.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    low_hu: float
    high_hu: float
    presentation: bool = False
    percentiles: bool = False
    """MR: ``low_hu`` and ``high_hu`` are percentiles of the whole volume's values (MR has no absolute scale)"""

    def for_volume(self, values: np.ndarray) -> Window:
        """The window in the volume's own values: percentile windows resolved once per volume, so every
        slice is shown on one scale; other windows as they are."""
        if not self.percentiles:
            return self
        low, high = (float(v) for v in np.percentile(values, [self.low_hu, self.high_hu]))
        return Window(name=self.name, low_hu=low, high_hu=max(high, low + 1e-3))

    @property
    def center(self) -> float:
        return (self.low_hu + self.high_hu) / 2.0

    @property
    def width(self) -> float:
        return self.high_hu - self.low_hu


# The presets Microsoft's own MedImageParse client applies to CT (healthcareai-examples,
# MedImageParseClient.special_normalizations "ct-lung" and "ct-abdomen"), i.e. the windows the
# model was trained with. The familiar reading windows (lung W1500/L-600, soft tissue
# W400/L40) are close but not what the model saw.
WINDOWS: dict[str, Window] = {
    w.name: w
    for w in (
        Window(name="lung", low_hu=-1000.0, high_hu=1000.0),
        Window(name="abdomen", low_hu=-150.0, high_hu=250.0),
        # A radiograph as the DICOM header says to show it (its VOI LUT or window): the model was
        # trained on radiographs as displayed (PNG/JPEG exports), not on raw detector values.
        Window(name="radiograph", low_hu=0.0, high_hu=1.0, presentation=True),
        # MR intensities have no fixed scale: the 0.5th-99.5th percentile of the volume, the
        # normalisation BiomedParse's MRI preprocessing describes (not verified against the endpoint).
        Window(name="mr", low_hu=0.5, high_hu=99.5, percentiles=True),
    )
}

PROMPT_TABLE_TEXT = """
target      | modality | body parts                              | prompt      | window  | category
left-lung   | CT       | CHEST, THORAX, LUNG, WHOLEBODY          | left lung   | lung    | lung
right-lung  | CT       | CHEST, THORAX, LUNG, WHOLEBODY          | right lung  | lung    | lung
liver       | CT       | ABD, CHEST_TO_PELVIS, LIVER, WHOLEBODY  | liver       | abdomen | liver
spleen      | CT       | ABD, CHEST_TO_PELVIS, WHOLEBODY         | spleen      | abdomen | other organ
pancreas    | CT       | ABD, CHEST_TO_PELVIS, PANCREAS, WHOLEBODY | pancreas  | abdomen | pancreas
left-lung   | DX       | CHEST, THORAX, LUNG                     | left lung   | radiograph | lung
right-lung  | DX       | CHEST, THORAX, LUNG                     | right lung  | radiograph | lung
heart       | DX       | CHEST, THORAX                           | heart       | radiograph | heart anatomies
left-lung   | CR       | CHEST, THORAX, LUNG                     | left lung   | radiograph | lung
right-lung  | CR       | CHEST, THORAX, LUNG                     | right lung  | radiograph | lung
heart       | CR       | CHEST, THORAX                           | heart       | radiograph | heart anatomies
liver       | MR       | ABD, LIVER, WHOLEBODY                   | liver       | mr      | liver
left-ventricle | MR    | HEART, CHEST, THORAX, CARDIAC           | left heart ventricle | mr | heart anatomies
prostate    | MR       | PELVIS, PROSTATE                        | prostate    | mr      | other organ
"""


class PromptRow(BaseModel):
    """One row of the prompt table."""

    model_config = ConfigDict(frozen=True)

    target: str
    modality: str
    body_parts: tuple[str, ...]
    prompt: str
    window: Window
    category: str


class PromptItem(BaseModel):
    """One ``&``-separated sentence of a request and the structure its mask becomes."""

    model_config = ConfigDict(frozen=True)

    target: str
    prompt: str
    category: str


class PromptGroup(BaseModel):
    """Targets shown in the same window: one request row per slice, one mask per item."""

    model_config = ConfigDict(frozen=True)

    window: Window
    items: tuple[PromptItem, ...]

    @property
    def text(self) -> str:
        """The ``text`` column: sentences joined by ``&`` (one output mask each, in order)."""
        return " & ".join(item.prompt for item in self.items)


def _parse_table(text: str) -> tuple[PromptRow, ...]:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    rows: list[PromptRow] = []
    for number, line in enumerate(lines[1:], start=2):
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) != 6:
            raise ValueError(f"prompt table line {number} has {len(cells)} columns, 6 expected: {line!r}")
        target, modality, body_parts, prompt, window, category = cells
        if window not in WINDOWS:
            raise ValueError(f"prompt table line {number}: unknown window {window!r}; known: {', '.join(WINDOWS)}")
        if "&" in prompt:
            raise ValueError(f"prompt table line {number}: a prompt may not contain '&', which separates prompts")
        rows.append(PromptRow(
            target=target,
            modality=modality.upper(),
            body_parts=tuple(part.strip().upper() for part in body_parts.split(",") if part.strip()),
            prompt=prompt,
            window=WINDOWS[window],
            category=category,
        ))
    return tuple(rows)


PROMPT_TABLE: tuple[PromptRow, ...] = _parse_table(PROMPT_TABLE_TEXT)


def known_targets(modality: str | None = None) -> list[str]:
    """Target keys the table has a prompt for (for ``modality``, when given)."""
    wanted = modality.upper() if modality else None
    return sorted({row.target for row in PROMPT_TABLE if wanted is None or row.modality == wanted})


def _expand(targets: Sequence[str]) -> list[str]:
    keys: list[str] = []
    for raw in targets:
        name = raw.strip().lower()
        for key in TARGET_ALIASES.get(name, (name,)):
            if key not in keys:
                keys.append(key)
    return keys


def build_prompts(modality: str, body_part: str | None, targets: Sequence[str]) -> list[PromptGroup]:
    """The prompt groups for ``targets`` on a series of ``modality`` and ``body_part``.

    Targets sharing a window share a group (one request row per slice); groups keep the
    order of the first target that needs each window.

    Raises:
        UnknownTargetError: a target has no row for this modality, or the series' body part
            is one the target does not lie in; the message lists what is known.
    """
    keys = _expand(targets)
    if not keys:
        raise UnknownTargetError(f"no segmentation target given; known targets: {', '.join(known_targets())}.")
    modality_key = modality.strip().upper()
    part = (body_part or "").strip().upper()
    groups: dict[str, list[PromptItem]] = {}
    for key in keys:
        rows = [row for row in PROMPT_TABLE if row.target == key]
        if not rows:
            raise UnknownTargetError(
                f"MedImageParse has no prompt for '{key}'. Known targets: {', '.join(known_targets())}. "
                "Add a row to PROMPT_TABLE_TEXT in tools/segmentation/prompts.py to teach it one."
            )
        for_modality = [row for row in rows if row.modality == modality_key]
        if not for_modality:
            raise UnknownTargetError(
                f"MedImageParse has no prompt for '{key}' on {modality_key or 'an unknown modality'}; it has one for "
                f"{', '.join(sorted({row.modality for row in rows}))}. Targets known for {modality_key or 'it'}: "
                f"{', '.join(known_targets(modality_key)) or 'none'}."
            )
        matching = [row for row in for_modality if not part or any(p in part for p in row.body_parts)]
        if not matching:
            expected = sorted({p for row in for_modality for p in row.body_parts})
            raise UnknownTargetError(
                f"'{key}' is not expected in a {modality_key} of body part {part}: it lies in {', '.join(expected)}. "
                "Choose a series that covers it, or correct the series' Body Part Examined."
            )
        row = matching[0]
        groups.setdefault(row.window.name, []).append(PromptItem(target=key, prompt=row.prompt, category=row.category))
    return [PromptGroup(window=WINDOWS[name], items=tuple(items)) for name, items in groups.items()]
