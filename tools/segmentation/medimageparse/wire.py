"""The MedImageParse scoring contract: request bodies from pixel arrays, answers back to arrays.

See tools/segmentation/medimageparse/__init__.py for the contract. Only pixels leave the
hospital: the request builders take arrays, never a DICOM dataset.
"""

from __future__ import annotations

import ast
import base64
import binascii
import gzip
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from PIL import Image

from tools.http.scoring import ScoringError

MODEL_SIZE = 1024
MASK_THRESHOLD = 128


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


def as_scores(masks: np.ndarray) -> np.ndarray:
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
        results.append(RowResult(masks=as_scores(masks), categories=[str(c) for c in categories]))
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

