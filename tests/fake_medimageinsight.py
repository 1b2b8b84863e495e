"""A MedImageInsight scoring endpoint for tests: the published contract, embeddings read from the pixels.

Requests are validated strictly (tools/segmentation/input_check.py has the contract): exactly
``input_data`` and ``params``; columns ["image", "text"]; index 0..n-1; rows of [image or null,
text or null], not both null; an image must be a base64 RGB JPEG of 512x512. Anything off is
answered 400 and kept in ``problems``.

Its "model" embeds in four dimensions, one per kind of input it can tell apart: a frontal chest
radiograph (dark just inside the body's left and right edges, as the MedImageParse fake tells it),
an axial chest CT (a body with large dark lungs inside it), a head CT (a body with no dark inside),
anything else. A label's embedding is the kind its words name. The HTTP side (429 / 500 / delays,
the key) is the MedImageParse fake's.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from tests.fake_medimageparse import FakeMedImageParse, _is_radiograph, _largest

SIZE = 512
# JPEG leaves the air outside the body a few grey levels above black.
OUTSIDE_LEVEL = 20
KINDS = ("x-ray chest frontal", "computed tomography chest", "computed tomography head", "other")


@dataclass
class FakeMedImageInsight(FakeMedImageParse):
    """Start with ``with FakeMedImageInsight() as server:``; point the checker at ``server.url``."""

    def _score(self, request: dict) -> list[dict]:
        if set(request) != {"input_data", "params"}:
            raise ValueError(f"top-level keys must be input_data and params, got {sorted(request)}")
        data = request["input_data"]
        if set(data) != {"columns", "index", "data"} or data["columns"] != ["image", "text"]:
            raise ValueError("input_data must have columns ['image', 'text']")
        rows = data["data"]
        if not isinstance(rows, list) or not rows or data["index"] != list(range(len(rows))):
            raise ValueError("index must be 0..n-1 for n rows")
        answers = []
        for number, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 2 and all(v is None or isinstance(v, str) for v in row)):
                raise ValueError(f"row {number} must be [image or null, text or null]")
            if row[0] is None and row[1] is None:
                raise ValueError(f"row {number} has neither an image nor a text")
            answer: dict[str, object] = {"scaling_factor": math.log(100.0)}
            if row[0] is not None:
                answer["image_features"] = [_one_hot(_kind_of_image(_jpeg(row[0], number)))]
            if row[1] is not None:
                answer["text_features"] = [_one_hot(_kind_of_label(row[1]))]
            answers.append(answer)
        with self._lock:
            self.prompts.extend(str(row[1]) for row in rows if row[1] is not None)
        return answers


def _jpeg(encoded: str, number: int) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))
    except (binascii.Error, UnidentifiedImageError) as exc:
        raise ValueError(f"row {number}: the image is not base64 of an image file ({exc})") from exc
    if image.format != "JPEG" or image.mode != "RGB" or image.size != (SIZE, SIZE):
        raise ValueError(f"row {number}: the image is {image.format} {image.mode} {image.size}; RGB JPEG {SIZE}x{SIZE} expected")
    return np.asarray(image.convert("L"))


def _kind_of_image(gray: np.ndarray) -> str:
    outline = _largest(ndimage.binary_fill_holes(gray > OUTSIDE_LEVEL))
    if outline is None:
        return "other"
    if _is_radiograph(gray):
        return "x-ray chest frontal"
    inner = ndimage.binary_erosion(outline, iterations=8)
    dark = inner & (gray < 90)
    return "computed tomography chest" if dark.sum() > 0.1 * outline.sum() else "computed tomography head"


def _kind_of_label(label: str) -> str:
    text = label.lower()
    if text.startswith("x-ray chest") and ("posteroanterior" in text or "anteroposterior" in text):
        return "x-ray chest frontal"
    for kind in KINDS[1:3]:
        if text.startswith(kind):
            return kind
    return "other"


def _one_hot(kind: str) -> list[float]:
    return [1.0 if k == kind else 0.0 for k in KINDS]
