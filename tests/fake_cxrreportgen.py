"""A CXRReportGen scoring endpoint for tests: the published contract, findings read from the pixels.

Requests are validated strictly (tools/reporting/cxrreportgen.py has the contract): exactly
``input_data`` and ``params``; the five columns in order; one row of five strings; a frontal image
that decodes as PNG or JPEG; a lateral image or ""; texts of at most 1,000 characters. Anything off
is answered 400 and kept in ``problems``.

Its "model" reads the frontal image it was sent (the HTTP side, 429 / 500 / delays and the key
check, is the MedImageParse fake's): it finds the lung fields and the cardiac shadow as that fake
does on a radiograph and answers, in the model's format, a heart sentence grounded by a box around
the cardiac shadow (enlarged when the cardiothoracic ratio is above 0.5, normal otherwise), a lung
sentence grounded by a box around both lung fields, and an ungrounded sentence. Boxes are
normalised to the centre square of the image, as the model's are.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from tests.fake_medimageparse import FakeMedImageParse, body_outline, radiograph_regions

COLUMNS = ["frontal_image", "lateral_image", "indication", "technique", "comparison"]
MAX_TEXT = 1000


@dataclass
class FakeCxrReportGen(FakeMedImageParse):
    """Start with ``with FakeCxrReportGen() as server:``; point the drafter at ``server.url``."""

    rows: list[list[str]] = field(default_factory=list)
    """every request row as received"""

    def _score(self, request: dict) -> list[dict]:
        if set(request) != {"input_data", "params"}:
            raise ValueError(f"top-level keys must be input_data and params, got {sorted(request)}")
        data = request["input_data"]
        if set(data) != {"columns", "index", "data"} or data["columns"] != COLUMNS:
            raise ValueError(f"input_data must have columns {COLUMNS}, got {data.get('columns')}")
        if data["index"] != [0] or not isinstance(data["data"], list) or len(data["data"]) != 1:
            raise ValueError("one study per request: index [0] and one data row")
        row = data["data"][0]
        if not (isinstance(row, list) and len(row) == 5 and all(isinstance(v, str) for v in row)):
            raise ValueError("the row must hold five strings")
        frontal = _image(row[0], "frontal_image")
        if row[1]:
            _image(row[1], "lateral_image")
        for name, text in zip(COLUMNS[2:], row[2:], strict=True):
            if len(text) > MAX_TEXT:
                raise ValueError(f"{name} has {len(text)} characters; at most {MAX_TEXT}")
        with self._lock:
            self.rows.append(row)
        return [{"output": json.dumps(_findings(frontal))}]


def _image(encoded: str, column: str) -> np.ndarray:
    try:
        data = base64.b64decode("".join(encoded.split()), validate=True)
        image = Image.open(io.BytesIO(data))
        if image.format not in ("PNG", "JPEG"):
            raise ValueError(f"{column} is {image.format}, not PNG or JPEG")
        return np.asarray(image.convert("L"))
    except (binascii.Error, UnidentifiedImageError) as exc:
        raise ValueError(f"{column} is not a base64 image file: {exc}") from exc


def _normalised(mask: np.ndarray, shape: tuple[int, int]) -> list[float]:
    """The mask's box normalised to the image's centre square (the model's frame)."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    side = min(shape)
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    box = [(columns[0] - left) / side, (rows[0] - top) / side, (columns[-1] + 1 - left) / side, (rows[-1] + 1 - top) / side]
    return [round(min(1.0, max(0.0, float(v))), 3) for v in box]


def _widest(mask: np.ndarray) -> int:
    rows = np.flatnonzero(mask.any(axis=1))
    return int(max(np.flatnonzero(mask[r])[-1] - np.flatnonzero(mask[r])[0] + 1 for r in rows))


def _findings(gray: np.ndarray) -> list[list[object]]:
    outline = body_outline(gray)
    found = radiograph_regions(gray, outline) if outline is not None else None
    if found is None or not found[1].any():
        return [["No chest radiograph anatomy is recognised.", None]]
    lungs, heart = found
    ratio = _widest(heart) / _widest(lungs | heart)
    heart_text = "The heart is enlarged." if ratio > 0.5 else "The heart size is normal."
    return [
        [heart_text, [_normalised(heart, gray.shape)]],
        ["The lungs are clear.", [_normalised(lungs, gray.shape)]],
        ["There is no pneumothorax.", None],
    ]
