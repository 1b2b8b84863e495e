"""Engine `medimageparse`: the MedImageParse model behind an Azure AI Foundry online endpoint.

The scoring contract (Azure AI Foundry docs, "How to use MedImageParse"; Microsoft's
healthcareai-examples MedImageParseClient):

    POST <scoring URL>   Authorization: Bearer <key>
    {"input_data": {"columns": ["image", "text"], "index": [0, 1, ...],
                    "data": [[<base64 PNG, 1024x1024 RGB>, "left lung & right lung"], ...]}}
    -> [{"image_features": "{\"data\": <base64 of the raw array buffer>, \"shape\": [2, 1024, 1024],
                             \"dtype\": \"uint8\"}",
         "text_features": ["lung", "lung"]}, ...]            one object per row, in order

Each ``&``-separated sentence yields one mask (0-255; a pixel is inside at 128 or more) and
one category. The 3D variant (MedImageParse 3D) takes a base64 NIfTI volume and one target
per request and answers ``{"nifti_file": "{\"data\": <base64 .nii.gz>}"}``.

Only pixels leave the hospital: the request builders take arrays, never a DICOM dataset, and
no identifier goes into a URL, header or body. The NIfTI sent in 3D mode carries spacing and
orientation only (its origin is zeroed, its description empty).

How a CT slice becomes the model's image (2D), and back:

1. The slice is turned into the radiological view the model was trained on: anterior at the
   top, the patient's right on the image's left (columns run towards +x, the patient's left,
   rows towards +y, posterior; LPS, DICOM PS3.3 C.7.6.2.1.1). Feet-first or prone series are
   flipped into that view, so "left lung" means the same thing for every series.
2. It is resized with its *physical* aspect ratio: non-square pixels are resampled to square
   ones in the same step, the longer side becomes 1024 pixels, and it is centred on a black
   1024x1024 canvas (the vendor client pads centred, with black, after windowing).
3. Windowed for the target (prompts.py), scaled to 0-255 and repeated into R, G and B.
4. Masks come back on that canvas: the padding is cut away, the rest resized to the slice's
   matrix (bilinear on the 0-255 score, then the 128 threshold, which keeps edges smooth)
   and the view undone, so each mask lies on the volume's own voxel grid.

Left and right are checked against the geometry afterwards: a left/right mask pair whose
sides disagree with patient x is reassigned by position and flagged (see `_enforce_sides`).
"""

from __future__ import annotations

import ast
import base64
import binascii
import gzip
import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import httpx
import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform
from nibabel.spatialimages import HeaderDataError
from PIL import Image

from agent.settings import Settings
from tools.http.config import RetryPolicy
from tools.http.retry import RETRYABLE_STATUS, ServiceUnavailableError, send_with_retry
from tools.imaging.volume import Volume
from tools.segmentation.base import (
    EngineError,
    QAFlag,
    SegmentationResult,
    StructureMask,
    resolve_targets,
)
from tools.segmentation.prompts import PromptGroup, Window, build_prompts
from tools.segmentation.qa import qa_flags

log = logging.getLogger(__name__)

ENGINE_NAME = "medimageparse"
ADAPTER_VERSION = "1.0.0"
MODEL_SIZE = 1024
MASK_THRESHOLD = 128
SERVICE = "MedImageParse endpoint"
Mode = Literal["2d", "3d"]

# NIfTI's world is RAS+, DICOM's LPS: x and y point the other way.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Share of a structure's slices answered with an unexpected category above which it is a warning.
_CATEGORY_WARNING_SHARE = 0.1


class ScoringError(RuntimeError):
    """The endpoint answered, but not with what the contract promises.

    ``row`` is the request row (0-based) the problem belongs to, None for the whole answer.
    """

    def __init__(self, detail: str, row: int | None = None) -> None:
        self.detail = detail
        self.row = row
        super().__init__(detail)


# --- request and response (arrays in, arrays out) --------------------------------------


def encode_png(image: np.ndarray) -> str:
    """Base64 of a lossless PNG of an RGB uint8 image; PIL writes no text chunks unless asked."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=6)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def build_scoring_request(images: Sequence[np.ndarray], prompt: str) -> bytes:
    """The JSON body for one batch: one row per image, all rows asking ``prompt``.

    Takes pixel arrays only (1024x1024x3 uint8), so nothing but pixels can reach the body.
    """
    for number, image in enumerate(images):
        if image.shape != (MODEL_SIZE, MODEL_SIZE, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"image {number} of the batch is {image.dtype}{image.shape}; MedImageParse takes "
                f"{MODEL_SIZE}x{MODEL_SIZE} RGB uint8 images"
            )
    body = {
        "input_data": {
            "columns": ["image", "text"],
            "index": list(range(len(images))),
            "data": [[encode_png(image), prompt] for image in images],
        }
    }
    return json.dumps(body).encode("utf-8")


def build_volume_request(nifti_gz: bytes, prompt: str) -> bytes:
    """The JSON body for MedImageParse 3D: one gzipped NIfTI volume and one target."""
    body = {
        "input_data": {
            "columns": ["image", "text"],
            "index": [0],
            "data": [[base64.b64encode(nifti_gz).decode("ascii"), prompt]],
        }
    }
    return json.dumps(body).encode("utf-8")


def _literal(value: object, what: str, row: int | None) -> object:
    """A JSON-in-a-string field, decoded. The docs' own example quotes it Python-style ('data')."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError) as exc:
        raise ScoringError(f"{what} is neither JSON nor a literal: {exc}", row) from exc


def decode_array(value: object, row: int | None) -> np.ndarray:
    """`image_features`: {"data": base64 of the raw buffer, "shape": [...], "dtype": "uint8"}."""
    features = _literal(value, "image_features", row)
    if not isinstance(features, dict) or not {"data", "shape", "dtype"} <= features.keys():
        raise ScoringError("image_features lacks data, shape or dtype", row)
    try:
        raw = base64.b64decode(features["data"])
        dtype = np.dtype(str(features["dtype"]))
        shape = tuple(int(n) for n in features["shape"])
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise ScoringError(f"image_features cannot be decoded: {exc}", row) from exc


def _as_scores(masks: np.ndarray) -> np.ndarray:
    """0-255 scores from whatever numeric form the endpoint used (uint8, bool, 0-1 floats)."""
    if masks.dtype == np.uint8:
        return masks
    if masks.dtype == np.bool_:
        return masks.astype(np.uint8) * 255
    values = masks.astype(np.float32)
    if values.size and float(values.max()) <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


@dataclass
class RowResult:
    masks: np.ndarray
    """uint8 scores, (n_prompts, 1024, 1024)"""
    categories: list[str]


def parse_scoring_response(payload: object, n_rows: int, n_prompts: int) -> list[RowResult]:
    """Check and decode the answer to a batch of ``n_rows`` rows of ``n_prompts`` sentences."""
    if not isinstance(payload, list):
        raise ScoringError(f"the answer is a {type(payload).__name__}, not a list of one result per image")
    if len(payload) != n_rows:
        raise ScoringError(f"the answer has {len(payload)} results for {n_rows} images")
    results: list[RowResult] = []
    for row, item in enumerate(payload):
        if not isinstance(item, dict) or "image_features" not in item or "text_features" not in item:
            raise ScoringError("the result lacks image_features or text_features", row)
        masks = decode_array(item["image_features"], row)
        if masks.ndim == 3 and masks.shape[1:] != (MODEL_SIZE, MODEL_SIZE) and masks.shape[:2] == (MODEL_SIZE, MODEL_SIZE):
            masks = np.moveaxis(masks, 2, 0)  # the docs also describe the prompts as the third axis
        if masks.shape != (n_prompts, MODEL_SIZE, MODEL_SIZE):
            raise ScoringError(
                f"image_features has shape {list(masks.shape)}, expected [{n_prompts}, {MODEL_SIZE}, {MODEL_SIZE}]", row
            )
        categories = _literal(item["text_features"], "text_features", row)
        if isinstance(categories, str):
            categories = [categories]
        if not isinstance(categories, list) or len(categories) != n_prompts:
            raise ScoringError(f"text_features should hold {n_prompts} categories, got {categories!r}", row)
        results.append(RowResult(masks=_as_scores(masks), categories=[str(c) for c in categories]))
    return results


def parse_volume_response(payload: object) -> tuple[np.ndarray, np.ndarray | None]:
    """The 3D answer: the mask array and, for a NIfTI answer, its affine (None for image_features)."""
    if not isinstance(payload, list) or len(payload) != 1 or not isinstance(payload[0], dict):
        raise ScoringError("the 3D answer should be a list holding one result object")
    item = payload[0]
    if "nifti_file" in item:
        inner = _literal(item["nifti_file"], "nifti_file", None)
        if not isinstance(inner, dict) or "data" not in inner:
            raise ScoringError("nifti_file lacks its data field")
        try:
            raw = base64.b64decode(inner["data"])
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            image = nib.Nifti1Image.from_bytes(raw)
        except (binascii.Error, OSError, ValueError, ImageFileError, HeaderDataError) as exc:
            raise ScoringError(f"nifti_file is not a readable NIfTI volume: {exc}") from exc
        return np.asanyarray(image.dataobj), image.affine
    if "image_features" in item:
        masks = decode_array(item["image_features"], None)
        return (masks[0] if masks.ndim == 4 else masks), None
    raise ScoringError("the 3D answer has neither nifti_file nor image_features")


# --- HTTP ------------------------------------------------------------------------------


def check_endpoint(endpoint: str) -> None:
    """Refuse a URL that would send pixels unencrypted off this machine."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EngineError(
            f"IMAGING_AGENT_MEDIMAGEPARSE_URL {endpoint!r} is not an http(s) URL; copy the scoring URI "
            "from the endpoint's Consume page in Azure AI Foundry."
        )
    if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
        raise EngineError(
            f"IMAGING_AGENT_MEDIMAGEPARSE_URL {endpoint!r} uses plain http to another machine; image pixels "
            "must travel encrypted. Use the https scoring URI."
        )


class MedImageParseClient:
    """One connection to the scoring endpoint, with the project's retry policy."""

    def __init__(self, endpoint: str, key: str | None, *, timeout_s: float, retry: RetryPolicy) -> None:
        check_endpoint(endpoint)
        self.endpoint = endpoint
        self.retry = retry
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(timeout=timeout_s, headers=headers)
        self.requests_sent = 0
        self.bytes_sent = 0

    def __enter__(self) -> MedImageParseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def post(self, body: bytes) -> object:
        """POST one request body; the parsed JSON answer.

        Raises:
            ServiceUnavailableError: no usable answer after every retry (429, 5xx, timeouts).
            ScoringError: a non-retryable HTTP error, or an answer that is not JSON.
        """

        def send() -> httpx.Response:
            self.requests_sent += 1
            self.bytes_sent += len(body)
            return self._http.post(self.endpoint, content=body)

        response = send_with_retry(send, self.retry, SERVICE, self.endpoint)
        if response.status_code in (401, 403):
            raise ScoringError(
                f"HTTP {response.status_code}: the endpoint refused the key; check IMAGING_AGENT_MEDIMAGEPARSE_KEY "
                "(the endpoint's primary key in Azure AI Foundry)"
            )
        if response.status_code in RETRYABLE_STATUS:
            raise ScoringError(f"HTTP {response.status_code} after {self.retry.attempts} tries: {response.text[:300]}")
        if response.status_code >= 400:
            raise ScoringError(f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            return response.json()
        except ValueError as exc:
            raise ScoringError(f"the answer is not JSON ({exc})") from exc


# --- geometry: slice <-> model image ------------------------------------------------------


@dataclass(frozen=True)
class AxialView:
    """How array slices are shown to the model: anterior up, the patient's right on the left.

    ``forward`` maps (..., rows, columns) of the array to that view, ``backward`` undoes it.
    """

    transpose: bool
    flip_rows: bool
    flip_columns: bool
    pixel_mm: tuple[float, float]
    """(height, width) of a displayed pixel, mm"""

    @classmethod
    def from_volume(cls, volume: Volume) -> AxialView:
        geometry = volume.geometry
        column_dir, row_dir, normal = (np.asarray(d, dtype=float) for d in geometry.direction)
        if int(np.argmax(np.abs(normal))) != 2:
            raise EngineError(
                f"series {volume.series_instance_uid}: its slices are not axial (slice normal {normal.round(3).tolist()}); "
                "MedImageParse 2D reads axial CT slices. Use an axial reconstruction, the 3D mode, or another engine."
            )
        transpose = bool(abs(column_dir[0]) < abs(row_dir[0]))
        shown_columns, shown_rows = (row_dir, column_dir) if transpose else (column_dir, row_dir)
        width, height = (geometry.spacing[1], geometry.spacing[0]) if transpose else geometry.spacing[:2]
        return cls(
            transpose=transpose,
            flip_rows=bool(shown_rows[1] < 0),
            flip_columns=bool(shown_columns[0] < 0),
            pixel_mm=(float(height), float(width)),
        )

    def forward(self, array: np.ndarray) -> np.ndarray:
        view = np.swapaxes(array, -1, -2) if self.transpose else array
        if self.flip_rows:
            view = np.flip(view, axis=-2)
        if self.flip_columns:
            view = np.flip(view, axis=-1)
        return view

    def backward(self, array: np.ndarray) -> np.ndarray:
        view = array
        if self.flip_columns:
            view = np.flip(view, axis=-1)
        if self.flip_rows:
            view = np.flip(view, axis=-2)
        return np.swapaxes(view, -1, -2) if self.transpose else view


@dataclass(frozen=True)
class Placement:
    """Where the resized slice sits on the 1024x1024 canvas."""

    top: int
    left: int
    height: int
    width: int

    @classmethod
    def fit(cls, shape: tuple[int, int], pixel_mm: tuple[float, float]) -> Placement:
        """Largest box with the slice's physical aspect ratio, centred (vendor client: centred padding)."""
        height_mm, width_mm = shape[0] * pixel_mm[0], shape[1] * pixel_mm[1]
        scale = MODEL_SIZE / max(height_mm, width_mm)
        height = min(MODEL_SIZE, max(1, round(height_mm * scale)))
        width = min(MODEL_SIZE, max(1, round(width_mm * scale)))
        return cls(top=(MODEL_SIZE - height) // 2, left=(MODEL_SIZE - width) // 2, height=height, width=width)


def to_model_image(hu: np.ndarray, window: Window, placement: Placement) -> np.ndarray:
    """A displayed slice in HU -> the 1024x1024 RGB uint8 image the model reads."""
    source = Image.fromarray(np.ascontiguousarray(hu, dtype=np.float32))
    resized = np.asarray(source.resize((placement.width, placement.height), Image.Resampling.BICUBIC))
    scaled = (resized - window.low_hu) * (255.0 / window.width)
    canvas = np.zeros((MODEL_SIZE, MODEL_SIZE), dtype=np.uint8)
    canvas[placement.top : placement.top + placement.height, placement.left : placement.left + placement.width] = (
        np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    )
    return np.repeat(canvas[:, :, None], 3, axis=2)


def from_model_mask(scores: np.ndarray, placement: Placement, shape: tuple[int, int]) -> np.ndarray:
    """A 1024x1024 score map -> a boolean mask on the displayed slice's matrix."""
    crop = scores[placement.top : placement.top + placement.height, placement.left : placement.left + placement.width]
    resized = Image.fromarray(crop.astype(np.float32)).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized) >= MASK_THRESHOLD


# --- the engine ------------------------------------------------------------------------


@dataclass
class _Tally:
    """Per structure: its mask and what the model said about it."""

    mask: np.ndarray
    score_sum: float = 0.0
    score_count: int = 0
    slices_with_mask: int = 0
    category_mismatches: list[str] = field(default_factory=list)


class MedImageParseEngine:
    name = ENGINE_NAME

    def __init__(
        self,
        endpoint: str,
        key: str | None,
        *,
        batch_size: int = 8,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        mode: Mode = "2d",
    ) -> None:
        check_endpoint(endpoint)
        if batch_size < 1:
            raise EngineError(f"IMAGING_AGENT_MEDIMAGEPARSE_BATCH_SIZE is {batch_size}; it must be at least 1.")
        self.endpoint = endpoint
        self._key = key
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.mode = mode
        self.version = f"adapter {ADAPTER_VERSION} ({mode})"
        self.requests_sent = 0
        """HTTP requests of the last `segment` call, retries included"""
        self.bytes_sent = 0
        """request body bytes of the last `segment` call, retries included"""

    def _client(self) -> MedImageParseClient:
        return MedImageParseClient(self.endpoint, self._key, timeout_s=self.timeout_s, retry=self.retry)

    def segment(self, volume: Volume, targets: Sequence[str]) -> SegmentationResult:
        started = time.perf_counter()
        specs = resolve_targets(targets)
        groups = build_prompts(volume.modality, None, [s.key for s in specs])
        tallies = {s.key: _Tally(mask=np.zeros(volume.array.shape, dtype=bool)) for s in specs}
        with self._client() as client:
            try:
                if self.mode == "3d":
                    self._segment_3d(volume, groups, tallies, client)
                else:
                    self._segment_2d(volume, groups, tallies, client)
            finally:
                self.requests_sent, self.bytes_sent = client.requests_sent, client.bytes_sent
        flags = _enforce_sides(volume, tallies)
        structures = []
        for spec in specs:
            tally = tallies[spec.key]
            confidence = tally.score_sum / (255.0 * tally.score_count) if tally.score_count else 0.0
            structures.append(StructureMask(structure=spec, mask=tally.mask, confidence=round(confidence, 3)))
            flags.extend(_category_flags(volume, spec.key, spec.display, tally))
        flags.extend(qa_flags(volume, structures))
        for item in structures:
            item.flags = [f for f in flags if f.structure == item.structure.key]
        seconds = time.perf_counter() - started
        log.info(
            "medimageparse (%s) on series %s: %d requests, %d bytes, %.1f s",
            self.mode, volume.series_instance_uid, self.requests_sent, self.bytes_sent, seconds,
        )
        return SegmentationResult(
            engine=self.name,
            engine_version=self.version,
            structures=structures,
            flags=[f for f in flags if f.structure is None],
            seconds=seconds,
        )

    def _failure(self, volume: Volume, where: str, detail: str) -> EngineError:
        return EngineError(
            f"MedImageParse could not segment series {volume.series_instance_uid} ({where}): {detail}. "
            "Nothing was stored for this study. Check the endpoint in Azure AI Foundry (deployment running, "
            "quota, key) and run the study again, or choose another engine."
        )

    def _post(self, client: MedImageParseClient, body: bytes, volume: Volume, where: str) -> object:
        try:
            return client.post(body)
        except ServiceUnavailableError as exc:
            raise self._failure(volume, where, f"{exc.detail} after {exc.attempts} tries") from exc
        except ScoringError as exc:
            raise self._failure(volume, where, exc.detail) from exc

    def _segment_2d(
        self, volume: Volume, groups: list[PromptGroup], tallies: dict[str, _Tally], client: MedImageParseClient
    ) -> None:
        view = AxialView.from_volume(volume)
        shown = view.forward(volume.array)
        shape = (int(shown.shape[1]), int(shown.shape[2]))
        placement = Placement.fit(shape, view.pixel_mm)
        n_slices = shown.shape[0]
        for group in groups:
            masks = {item.target: view.forward(tallies[item.target].mask) for item in group.items}
            for start in range(0, n_slices, self.batch_size):
                stop = min(n_slices, start + self.batch_size)
                where = f"slices {start}-{stop - 1} of {n_slices}, prompt '{group.text}'"
                images = [to_model_image(shown[k], group.window, placement) for k in range(start, stop)]
                payload = self._post(client, build_scoring_request(images, group.text), volume, where)
                try:
                    rows = parse_scoring_response(payload, stop - start, len(group.items))
                except ScoringError as exc:
                    if exc.row is None:
                        raise self._failure(volume, where, exc.detail) from exc
                    k = start + exc.row
                    raise self._failure(
                        volume, f"slice {k} of {n_slices}, SOP Instance {volume.sop_instance_uids[k]}", exc.detail
                    ) from exc
                for k, row in zip(range(start, stop), rows, strict=True):
                    for index, item in enumerate(group.items):
                        tally = tallies[item.target]
                        scores = row.masks[index]
                        masks[item.target][k] = from_model_mask(scores, placement, shape)
                        inside = scores >= MASK_THRESHOLD
                        count = int(np.count_nonzero(inside))
                        if count:
                            tally.score_sum += float(scores[inside].sum(dtype=np.int64))
                            tally.score_count += count
                            tally.slices_with_mask += 1
                            if row.categories[index] != item.category:
                                tally.category_mismatches.append(row.categories[index])
                log.info("medimageparse series %s: %s done", volume.series_instance_uid, where)

    def _segment_3d(
        self, volume: Volume, groups: list[PromptGroup], tallies: dict[str, _Tally], client: MedImageParseClient
    ) -> None:
        canonical, back = _canonical_nifti(volume)
        nifti_gz = gzip.compress(canonical.to_bytes(), compresslevel=6, mtime=0)
        for group in groups:
            for item in group.items:
                where = f"whole volume, prompt '{item.prompt}'"
                payload = self._post(client, build_volume_request(nifti_gz, item.prompt), volume, where)
                try:
                    result, affine = parse_volume_response(payload)
                    result = _on_canonical_grid(result, affine, canonical)
                except ScoringError as exc:
                    raise self._failure(volume, where, exc.detail) from exc
                # The 3D examples read the answer as a label map (0/1); 0-255 scores like 2D's are accepted too.
                labels = np.issubdtype(result.dtype, np.integer) and int(result.max(initial=0)) <= 1
                scores = _as_scores(result.astype(bool) if labels else result)
                inside = scores >= MASK_THRESHOLD
                tally = tallies[item.target]
                tally.mask = np.ascontiguousarray(apply_orientation(inside, back).transpose(2, 1, 0))
                count = int(np.count_nonzero(inside))
                tally.score_sum += float(scores[inside].sum(dtype=np.int64))
                tally.score_count += count
                tally.slices_with_mask = int(np.count_nonzero(tally.mask.any(axis=(1, 2))))


def _canonical_nifti(volume: Volume) -> tuple[nib.Nifti1Image, np.ndarray]:
    """The volume as a NIfTI in closest-canonical (RAS) order, and the orientation transform back.

    RAS is sent because the model reorients its input to RAS itself: then its output lies on
    the grid we sent. Only spacing and axis directions go with the voxels: the origin is zeroed
    (the patient position stays here) and the header carries no description.
    """
    data = volume.array.transpose(2, 1, 0)  # NIfTI (i, j, k) = (column, row, slice)
    dtype = np.int16 if np.issubdtype(volume.array.dtype, np.integer) else np.float32
    affine = _LPS_TO_RAS @ volume.geometry.affine()
    canonical = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, dtype=dtype), affine))
    canonical_affine = canonical.affine.copy()
    canonical_affine[:3, 3] = 0.0
    sent = nib.Nifti1Image(np.asarray(canonical.dataobj), canonical_affine)
    sent.header.set_xyzt_units("mm")
    return sent, ornt_transform(io_orientation(canonical_affine), io_orientation(affine))


def _on_canonical_grid(result: np.ndarray, affine: np.ndarray | None, canonical: nib.Nifti1Image) -> np.ndarray:
    """The 3D answer on the grid that was sent (reoriented if the answer came in another order)."""
    if affine is not None:
        result = apply_orientation(result, ornt_transform(io_orientation(affine), io_orientation(canonical.affine)))
    if result.shape != canonical.shape:
        raise ScoringError(f"the 3D mask has shape {list(result.shape)}, the volume sent {list(canonical.shape)}")
    return result


def _slice_centroids_x(volume: Volume, mask: np.ndarray) -> np.ndarray:
    """Patient x (LPS mm) of the mask's centroid on every slice; NaN where the slice is empty."""
    counts = mask.sum(axis=(1, 2)).astype(float)
    rows = (mask.sum(axis=2) * np.arange(mask.shape[1])).sum(axis=1)
    columns = (mask.sum(axis=1) * np.arange(mask.shape[2])).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        index = np.stack([columns / counts, rows / counts, np.arange(mask.shape[0], dtype=float)], axis=1)
    x = volume.geometry.index_to_patient(np.nan_to_num(index))[:, 0]
    return np.where(counts > 0, x, np.nan)


def _enforce_sides(volume: Volume, tallies: dict[str, _Tally]) -> list[QAFlag]:
    """Give every left-X/right-X pair its side by patient x (LPS: +x is the patient's left).

    The model's "left" is learnt from images in the radiological view; the view built here
    follows the DICOM geometry, so the two should agree. Where they do not, on a slice with
    both masks the one further to +x becomes the left; on a slice with one, it takes the
    side of the midline (median midpoint of the two-mask slices) it lies on. Each
    reassignment is reported to the approver.
    """
    flags: list[QAFlag] = []
    for left_key in [k for k in tallies if k.startswith("left-")]:
        right_key = "right-" + left_key.removeprefix("left-")
        if right_key not in tallies:
            continue
        left, right = tallies[left_key].mask, tallies[right_key].mask
        left_x, right_x = _slice_centroids_x(volume, left), _slice_centroids_x(volume, right)
        both = ~np.isnan(left_x) & ~np.isnan(right_x)
        swapped = both & (left_x < right_x)
        midpoints = ((left_x + right_x) / 2.0)[both]
        if midpoints.size:
            midline = float(np.median(midpoints))
            swapped |= ~np.isnan(left_x) & np.isnan(right_x) & (left_x < midline)
            swapped |= np.isnan(left_x) & ~np.isnan(right_x) & (right_x > midline)
        slices = np.flatnonzero(swapped)
        if slices.size == 0:
            continue
        left[slices], right[slices] = right[slices].copy(), left[slices].copy()
        shown = ", ".join(str(k) for k in slices[:10]) + (" ..." if slices.size > 10 else "")
        structure = left_key.removeprefix("left-")
        flags.append(QAFlag(
            code="laterality-corrected", severity="warning", structure=None,
            message=f"MedImageParse labelled the {structure}s the other way round on {slices.size} slice(s) of series "
            f"{volume.series_instance_uid} (slices {shown}); the adapter reassigned left and right by patient "
            "position (DICOM LPS x). Check both sides before approving.",
        ))
    return flags


def _category_flags(volume: Volume, key: str, display: str, tally: _Tally) -> list[QAFlag]:
    if not tally.category_mismatches:
        return []
    share = len(tally.category_mismatches) / max(tally.slices_with_mask, 1)
    answers = ", ".join(sorted(set(tally.category_mismatches)))
    return [QAFlag(
        code="model-category-mismatch",
        severity="warning" if share >= _CATEGORY_WARNING_SHARE else "info",
        structure=key,
        message=f"{display}: on {len(tally.category_mismatches)} of {tally.slices_with_mask} slices of series "
        f"{volume.series_instance_uid} MedImageParse classed the mask as '{answers}', not the expected category. "
        "Check those slices for other structures included in the mask.",
    )]


def build_medimageparse_engine(settings: Settings) -> MedImageParseEngine:
    if not settings.medimageparse_url:
        raise EngineError(
            "the medimageparse engine needs the endpoint's scoring URL: set IMAGING_AGENT_MEDIMAGEPARSE_URL "
            "and IMAGING_AGENT_MEDIMAGEPARSE_KEY (see .env.example)."
        )
    key = settings.medimageparse_key.get_secret_value() if settings.medimageparse_key else None
    return MedImageParseEngine(
        settings.medimageparse_url,
        key,
        batch_size=settings.medimageparse_batch_size,
        timeout_s=settings.medimageparse_timeout_s,
        retry=settings.retry_policy(),
        mode=settings.medimageparse_mode,
    )
