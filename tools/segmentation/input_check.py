"""Is the input what the goal expects? A zero-shot check with MedImageInsight before segmenting.

MedImageInsight (Azure AI Foundry) embeds images and text in one space. The check embeds one
representative image of the series (a radiograph's frontal image; a CT's middle slice) and a fixed
set of labels in the model's own label style (``"<modality> <body part> <view>"``, as Microsoft's
zero-shot examples write them), takes the softmax of the scaled cosine similarities, and compares
the best label with the labels the goal expects: a chest CT goal expects "computed tomography chest
axial", a chest radiograph goal an x-ray chest frontal view. A mismatch is a QA flag on the card or
a refusal before any segmentation (IMAGING_AGENT_INPUT_CHECK).

The scoring contract (healthcareai-examples, agentic/medimageinsight/mcp-server/mi2_client.py):

    POST <scoring URL>   Authorization: Bearer <key>
    {"input_data": {"columns": ["image", "text"], "index": [0, ...], "data": [[<base64 JPEG> | null, <label> | null], ...]},
     "params": {}}
    -> [{"image_features": [[...]], "text_features": [[...]], "scaling_factor": <log scale>}, ...]   one per row

Images go as the examples send them: RGB 512x512, the 5th-95th percentile stretched to 0-255, JPEG
quality 75. The label embeddings do not depend on the study and are asked for once per process.
Only pixels and the fixed labels leave the hospital.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from typing import Literal
from urllib.parse import urlsplit

import numpy as np
from PIL import Image
from pydantic import BaseModel

from tools.http import RetryPolicy
from tools.http.errors import ServiceUnavailableError
from tools.http.scoring import ScoringClient, ScoringError, check_endpoint
from tools.imaging.projection import is_projection
from tools.imaging.volume import Volume
from tools.segmentation.base import QAFlag

log = logging.getLogger(__name__)

MODEL = "MedImageInsight"
ADAPTER_VERSION = "1.0.0"
SERVICE = "MedImageInsight endpoint"
IMAGE_SIZE = 512
InputCheckMode = Literal["off", "flag", "refuse"]

CT_CHEST = "computed tomography chest axial"
XR_CHEST_PA = "x-ray chest posteroanterior"
XR_CHEST_AP = "x-ray chest anteroposterior"
LABELS: tuple[str, ...] = (
    CT_CHEST,
    "computed tomography head axial",
    "computed tomography abdomen axial",
    XR_CHEST_PA,
    XR_CHEST_AP,
    "x-ray chest lateral",
    "magnetic resonance imaging brain axial",
    "x-ray hand posteroanterior",
)


class InputCheck(BaseModel):
    """What the model made of the input, against what the goal expected."""

    model: str
    model_version: str
    endpoint: str
    expected: list[str]
    best: str
    probabilities: dict[str, float]

    @property
    def matches(self) -> bool:
        return self.best in self.expected

    def flag(self, series_instance_uid: str) -> QAFlag | None:
        if self.matches:
            return None
        return QAFlag(
            code="input-mismatch", severity="warning", structure=None,
            message=f"{self.model} reads series {series_instance_uid} as '{self.best}' "
            f"({self.probabilities[self.best]:.0%}), not as {' or '.join(repr(e) for e in self.expected)} as the goal "
            "expects. Check that the right series and study were used before approving.",
        )


def expected_labels(volume: Volume) -> list[str]:
    """The labels a series of this modality is expected to match (chest goals: the project's targets)."""
    if is_projection(volume.modality):
        return [XR_CHEST_PA, XR_CHEST_AP]
    return [CT_CHEST]


def representative_image(volume: Volume) -> np.ndarray:
    """The image the check looks at: a radiograph as stored values 0..1, a CT's middle slice in -1000..1000 HU."""
    if is_projection(volume.modality):
        return volume.array[0].astype(np.float32)
    middle = volume.array[volume.array.shape[0] // 2].astype(np.float32)
    return np.clip((middle + 1000.0) / 2000.0, 0.0, 1.0)


def encode_image(image: np.ndarray) -> str:
    """As Microsoft's client prepares an image: RGB 512x512, 5th-95th percentile to 0-255, JPEG q75."""
    grey = Image.fromarray(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)).convert("RGB")
    array = np.asarray(grey.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC), dtype=np.float32)
    low, high = np.percentile(array, (5.0, 95.0))
    stretched = np.clip((array - low) / max(float(high - low), 1e-6) * 255.0, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(stretched).save(buffer, format="JPEG", quality=75)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _body(rows: list[list[str | None]]) -> bytes:
    return json.dumps(
        {"input_data": {"columns": ["image", "text"], "index": list(range(len(rows))), "data": rows}, "params": {}}
    ).encode("utf-8")


def _features(payload: object, key: str, count: int) -> tuple[np.ndarray, float | None]:
    if not isinstance(payload, list) or len(payload) != count or not all(isinstance(r, dict) and key in r for r in payload):
        raise ScoringError(f"the answer should be {count} result(s) holding {key}")
    try:
        vectors = np.stack([np.squeeze(np.asarray(r[key], dtype=np.float64)) for r in payload])
        scale = float(payload[0]["scaling_factor"]) if "scaling_factor" in payload[0] else None
    except (TypeError, ValueError) as exc:
        raise ScoringError(f"{key} is not a list of numbers: {exc}") from exc
    if vectors.ndim != 2 or not np.isfinite(vectors).all():
        raise ScoringError(f"{key} should be one finite vector per row")
    return vectors, scale


class InputCheckError(RuntimeError):
    """The check could not be made; the message names the series, what failed and what to do."""


class MedImageInsightChecker:
    name = MODEL
    version = f"adapter {ADAPTER_VERSION}"

    def __init__(self, endpoint: str, key: str | None, *, timeout_s: float = 60.0, retry: RetryPolicy | None = None) -> None:
        check_endpoint(endpoint, "IMAGING_AGENT_MEDIMAGEINSIGHT_URL")
        self.endpoint = endpoint
        self._key = key
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._labels: tuple[np.ndarray, float] | None = None
        self.requests_sent = 0
        self.bytes_sent = 0

    def _post(self, body: bytes, volume: Volume) -> object:
        with ScoringClient(
            self.endpoint, self._key, timeout_s=self.timeout_s, retry=self.retry, service=SERVICE,
            key_setting="IMAGING_AGENT_MEDIMAGEINSIGHT_KEY",
        ) as client:
            try:
                return client.post(body)
            except (ServiceUnavailableError, ScoringError) as exc:
                raise InputCheckError(
                    f"MedImageInsight could not check series {volume.series_instance_uid}: {exc}. Nothing was stored. "
                    "Check the endpoint (deployment running, quota, key) and run the study again, or set "
                    "IMAGING_AGENT_INPUT_CHECK=off."
                ) from exc
            finally:
                self.requests_sent += client.requests_sent
                self.bytes_sent += client.bytes_sent

    def _label_features(self, volume: Volume) -> tuple[np.ndarray, float]:
        if self._labels is None:
            payload = self._post(_body([[None, label] for label in LABELS]), volume)
            try:
                vectors, scale = _features(payload, "text_features", len(LABELS))
            except ScoringError as exc:
                raise InputCheckError(f"MedImageInsight's label embeddings are off contract: {exc.detail}") from exc
            self._labels = (vectors, scale if scale is not None else float(np.log(100.0)))
        return self._labels

    def check(self, volume: Volume) -> InputCheck:
        """Embed the series' representative image, compare it with the labels; which label it is closest to."""
        labels, scale = self._label_features(volume)
        payload = self._post(_body([[encode_image(representative_image(volume)), None]]), volume)
        try:
            image, _ = _features(payload, "image_features", 1)
        except ScoringError as exc:
            raise InputCheckError(f"MedImageInsight's image embedding is off contract: {exc.detail}") from exc
        logits = float(np.exp(scale)) * (image[0] @ labels.T)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = LABELS[int(np.argmax(probabilities))]
        result = InputCheck(
            model=MODEL, model_version=self.version, endpoint=urlsplit(self.endpoint).netloc,
            expected=expected_labels(volume), best=best,
            probabilities={label: round(float(p), 4) for label, p in zip(LABELS, probabilities, strict=True)},
        )
        log.info("MedImageInsight on series %s: %s (%s)", volume.series_instance_uid, best,
                 "as expected" if result.matches else "not as expected")
        return result
