"""CXRReportGen (Azure AI Foundry): a chest radiograph study -> draft findings grounded by boxes.

The scoring contract, as Microsoft's healthcareai-examples (azureml/cxrreportgen/cxr-deploy.ipynb)
and the Azure AI Foundry page "How to use CXRReportGen" show it:

    POST <scoring URL>   Authorization: Bearer <key>
    {"input_data": {"columns": ["frontal_image", "lateral_image", "indication", "technique", "comparison"],
                    "index": [0],
                    "data": [[<base64 image file>, <base64 image file>, "<text>", "<text>", "<text>"]]},
     "params": {}}
    -> [{"output": "[[\"The heart size is normal.\", null],
                     [\"A small right pleural effusion is present.\", [[0.115, 0.555, 0.425, 0.845]]], ...]"}]

Each finding is a sentence and either null or boxes ``[x_min, y_min, x_max, y_max]`` normalised to
the image the model saw after it cropped the centre square of what it was sent (the notebook
undoes that crop). So the image is sent already square: the radiograph as displayed (head up,
patient's right on the left), padded with black to a square, centred, and scaled down to at most
1024 pixels a side; the crop is then a no-op and a box maps back through the padding and the scale
onto the radiograph's own pixels.

**Assumed** (not in what we could read): an empty ``lateral_image`` string when the study has no
lateral view; PNG accepted like the JPEG of the examples; 8-bit grayscale accepted like RGB.
Only pixels and the three short texts leave the hospital: no DICOM header, no names (the context
is built by tools/reporting/context.py, which removes the patient's names and identifiers).
"""

from __future__ import annotations

import base64
import io
import json
import logging
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from tools.http import RetryPolicy
from tools.http.errors import ServiceUnavailableError
from tools.http.scoring import ScoringClient, ScoringError, check_endpoint
from tools.imaging.volume import Volume
from tools.reporting.models import Box, DraftFinding, DraftReport, ReportContext
from tools.segmentation.base import EngineError
from tools.segmentation.medimageparse.view import radiograph_view

log = logging.getLogger(__name__)

MODEL = "CXRReportGen"
ADAPTER_VERSION = "1.0.0"
MAX_SIDE = 1024
COLUMNS = ["frontal_image", "lateral_image", "indication", "technique", "comparison"]
SERVICE = "CXRReportGen endpoint"


class DraftError(RuntimeError):
    """No draft could be made; the message names the study's series, what failed and what to do."""


class Canvas:
    """Where the displayed radiograph sits on the square image sent."""

    def __init__(self, shape: tuple[int, int]) -> None:
        rows, columns = shape
        side = max(rows, columns)
        self.scale = min(1.0, MAX_SIDE / side)
        self.side = max(1, round(side * self.scale))
        self.height = max(1, round(rows * self.scale))
        self.width = max(1, round(columns * self.scale))
        self.top = (self.side - self.height) // 2
        self.left = (self.side - self.width) // 2
        self.shape = shape

    def image(self, shown: np.ndarray) -> bytes:
        """Presentation values (0..1) as the square 8-bit grayscale PNG the model reads."""
        grey = Image.fromarray(np.clip(np.rint(shown * 255.0), 0, 255).astype(np.uint8))
        if (self.height, self.width) != shown.shape:
            grey = grey.resize((self.width, self.height), Image.Resampling.LANCZOS)
        canvas = Image.new("L", (self.side, self.side), 0)
        canvas.paste(grey, (self.left, self.top))
        buffer = io.BytesIO()
        canvas.save(buffer, format="PNG", compress_level=6)
        return buffer.getvalue()

    def to_shown(self, normalised: list[float]) -> tuple[int, int, int, int] | None:
        """A normalised [x_min, y_min, x_max, y_max] box -> (row_min, col_min, row_max, col_max) on the
        displayed radiograph, clipped to it; None when it lies wholly in the padding."""
        x0, y0, x1, y1 = (float(v) * self.side for v in normalised)
        rows, columns = self.shape
        row_min = max(0, int(np.floor((min(y0, y1) - self.top) / self.scale)))
        row_max = min(rows - 1, int(np.ceil((max(y0, y1) - self.top) / self.scale)) - 1)
        column_min = max(0, int(np.floor((min(x0, x1) - self.left) / self.scale)))
        column_max = min(columns - 1, int(np.ceil((max(x0, x1) - self.left) / self.scale)) - 1)
        if row_min > row_max or column_min > column_max:
            return None
        return row_min, column_min, row_max, column_max


def build_request(frontal_png: bytes, lateral_png: bytes | None, context: ReportContext) -> bytes:
    """The JSON body: images as base64 of their file bytes, then the three text sections."""
    row = [
        base64.b64encode(frontal_png).decode("ascii"),
        base64.b64encode(lateral_png).decode("ascii") if lateral_png else "",
        context.indication,
        context.technique,
        context.comparison,
    ]
    return json.dumps({"input_data": {"columns": COLUMNS, "index": [0], "data": [row]}, "params": {}}).encode("utf-8")


def parse_response(payload: object) -> list[tuple[str, list[list[float]]]]:
    """The answer's findings: (sentence, normalised boxes) in the model's order.

    Raises:
        ScoringError: the answer is not one result whose ``output`` is a list of [sentence, boxes or null].
    """
    if not isinstance(payload, list) or len(payload) != 1 or not isinstance(payload[0], dict):
        raise ScoringError("the answer should be a list holding one result object")
    output = payload[0].get("output")
    try:
        findings = json.loads(output) if isinstance(output, str) else output
    except ValueError as exc:
        raise ScoringError(f"the result's output is not JSON: {exc}") from exc
    if not isinstance(findings, list):
        raise ScoringError("the result's output is not a list of findings")
    parsed: list[tuple[str, list[list[float]]]] = []
    for number, item in enumerate(findings):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise ScoringError(f"finding {number} is not [sentence, boxes or null]")
        boxes = item[1] or []
        if not isinstance(boxes, list) or not all(
            isinstance(b, list) and len(b) == 4 and all(isinstance(v, int | float) and 0.0 <= v <= 1.0 for v in b)
            for b in boxes
        ):
            raise ScoringError(f"finding {number} has boxes that are not [x_min, y_min, x_max, y_max] within 0..1")
        parsed.append((item[0].strip(), [[float(v) for v in b] for b in boxes]))
    return parsed


def _box_on_source(volume: Volume, shown_box: tuple[int, int, int, int]) -> Box:
    """A box on the displayed radiograph -> the same pixels' box on the stored image."""
    view = radiograph_view(volume)
    shown = view.forward(np.zeros(volume.array.shape, dtype=bool)).copy()
    row_min, column_min, row_max, column_max = shown_box
    shown[0, row_min : row_max + 1, column_min : column_max + 1] = True
    source = view.backward(shown)[0]
    rows, columns = np.flatnonzero(source.any(axis=1)), np.flatnonzero(source.any(axis=0))
    return Box(row_min=int(rows[0]), column_min=int(columns[0]), row_max=int(rows[-1]), column_max=int(columns[-1]))


class CxrReportGenDrafter:
    """Draft findings for a chest radiograph study from one CXRReportGen endpoint."""

    name = MODEL
    version = f"adapter {ADAPTER_VERSION}"

    def __init__(self, endpoint: str, key: str | None, *, timeout_s: float = 120.0, retry: RetryPolicy | None = None) -> None:
        check_endpoint(endpoint, "IMAGING_AGENT_CXRREPORTGEN_URL")
        self.endpoint = endpoint
        self._key = key
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).netloc

    def draft(self, frontal: Volume, lateral: Volume | None, context: ReportContext) -> DraftReport:
        """One request with the frontal (and lateral) image and the context; the findings on the frontal image.

        Raises:
            DraftError: the endpoint failed after its retries, refused the request, or answered off contract.
        """
        try:
            frontal_view = radiograph_view(frontal)
        except EngineError as exc:
            raise DraftError(str(exc)) from exc
        shown = frontal_view.forward(frontal.array)[0]
        canvas = Canvas((int(shown.shape[0]), int(shown.shape[1])))
        lateral_png = None
        if lateral is not None:
            lateral_shown = lateral.array[0]
            lateral_png = Canvas((int(lateral_shown.shape[0]), int(lateral_shown.shape[1]))).image(lateral_shown)
        body = build_request(canvas.image(shown), lateral_png, context)
        with ScoringClient(
            self.endpoint, self._key, timeout_s=self.timeout_s, retry=self.retry, service=SERVICE,
            key_setting="IMAGING_AGENT_CXRREPORTGEN_KEY",
        ) as client:
            try:
                findings = parse_response(client.post(body))
            except ServiceUnavailableError as exc:
                raise self._failure(frontal, f"{exc.detail} after {exc.attempts} tries") from exc
            except ScoringError as exc:
                raise self._failure(frontal, exc.detail) from exc
            sent, size = client.requests_sent, client.bytes_sent
        drafted = []
        for sentence, boxes in findings:
            placed = [b for b in (canvas.to_shown(box) for box in boxes) if b is not None]
            drafted.append(DraftFinding(text=sentence, boxes=tuple(_box_on_source(frontal, b) for b in placed)))
        log.info("CXRReportGen on series %s: %d findings, %d requests, %d bytes", frontal.series_instance_uid,
                 len(drafted), sent, size)
        return DraftReport(
            model=MODEL, model_version=self.version, endpoint=self.host,
            frontal_sop_instance_uid=frontal.sop_instance_uids[0],
            lateral_sop_instance_uid=lateral.sop_instance_uids[0] if lateral is not None else None,
            context=context, findings=drafted, requests_sent=sent, bytes_sent=size,
        )

    def _failure(self, frontal: Volume, detail: str) -> DraftError:
        return DraftError(
            f"CXRReportGen could not draft findings for radiograph series {frontal.series_instance_uid}: {detail}. "
            "Nothing was stored for this study. Check the endpoint in Azure AI Foundry (deployment running, quota, "
            "key) and run the study again, or leave IMAGING_AGENT_CXRREPORTGEN_URL unset to segment without a draft."
        )
