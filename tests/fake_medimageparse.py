"""A MedImageParse scoring endpoint for tests: the documented contract, masks computed from the pixels.

It implements what Azure AI Foundry documents for MedImageParse (2D) and MedImageParse 3D
(see tools/segmentation/medimageparse/) on 127.0.0.1 and a free port. Requests are
validated as the real endpoint would need them (shape of the JSON, PNG of 1024x1024 RGB,
``&``-separated prompts; a gzipped NIfTI for 3D); anything off is answered 400 and kept in
``problems`` so a test can assert there were none.

Its "model" reads the pixels it was sent, so the masks say where the client put the anatomy:
air-dark pixels inside the body are lung, split at the body's centre line, and "left lung"
is the half on the image's right (the radiological view the client promises). Outside the
body the score is 127, one below the threshold: a client that used ``> 0`` instead of
``>= 128`` would take the room air as lung. In 3D the sides come from the NIfTI's RAS axes.

A chest radiograph is told from a CT slice by its content: a CT slice in the lung window has bright
pixels (skin, fat, muscle) just inside the body's left and right edges, a radiograph only dark ones
(the lateral chest wall is thin along the beam). On a radiograph the two largest dark regions inside
the outline are the lung fields, and "heart" is the largest bright region between their inner
edges, below their middle and above the diaphragm (the cardiac shadow).

Faults on request: queued error answers (429 with Retry-After, 500), queued delays (for
timeouts), corrupt result rows, and a "model" that mixes up left and right.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nibabel as nib
import numpy as np
from nibabel.orientations import io_orientation
from PIL import Image
from scipy import ndimage

SIZE = 1024
INSIDE = 230
OUTSIDE_BODY = 127
# -400 HU in the lung window (-1000..1000 HU -> 0..255): lung is darker, tissue brighter.
DARK_LEVEL = round((-400 + 1000) / 2000 * 255)
# Radiographs (presentation values 0..1 -> 0..255): outside the body is black, the lung fields dark.
OUTSIDE_LEVEL = 2
RADIOGRAPH_RIM_LEVEL = 70
RIM_OUTLINE_LEVEL = 20
RADIOGRAPH_LUNG_LEVEL = 50
_RIM_PX = 12


@dataclass
class Recorded:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeMedImageParse:
    """Start with ``with FakeMedImageParse() as server:``; point the client at ``server.url``."""

    key: str | None = None
    mirror_sides: bool = False
    python_literal: bool = False
    """answer image_features quoted like the docs' example ({'data': ...}) instead of JSON"""
    failures: list[tuple[int, str | None]] = field(default_factory=list)
    """error answers for the next requests: (status, Retry-After header or None)"""
    delays: list[float] = field(default_factory=list)
    """seconds to wait before answering the next requests"""
    corrupt_rows: set[tuple[int, int]] = field(default_factory=set)
    """(scored request number, row): that row's mask comes back with a wrong shape"""
    requests: list[Recorded] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    """every PNG decoded, (1024, 1024, 3) uint8, in arrival order"""
    prompts: list[str] = field(default_factory=list)
    volumes: list[nib.Nifti1Image] = field(default_factory=list)
    scored: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake server with 'with FakeMedImageParse() as server'"
        return f"http://127.0.0.1:{self._server.server_address[1]}/score"

    def __enter__(self) -> FakeMedImageParse:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                fake._handle(self, body)

            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # --- protocol ----------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            self.requests.append(Recorded(handler.path, dict(handler.headers.items()), body))
            delay = self.delays.pop(0) if self.delays else 0.0
            failure = self.failures.pop(0) if self.failures else None
        if delay:
            time.sleep(delay)
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            self._send(handler, status, {"error": f"injected {status}"}, headers)
            return
        if self.key is not None and handler.headers.get("Authorization") != f"Bearer {self.key}":
            self._send(handler, 401, {"error": "invalid key"})
            return
        try:
            answer = self._score(json.loads(body))
        except (ValueError, KeyError, TypeError, OSError) as exc:
            with self._lock:
                self.problems.append(str(exc))
            self._send(handler, 400, {"error": str(exc)})
            return
        self._send(handler, 200, answer)

    def _send(self, handler: BaseHTTPRequestHandler, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def _score(self, request: dict) -> list[dict]:
        input_data = request["input_data"]
        if set(request) != {"input_data"}:
            raise ValueError(f"unexpected top-level keys {sorted(request)}")
        if input_data["columns"] != ["image", "text"]:
            raise ValueError(f"columns must be ['image', 'text'], got {input_data['columns']}")
        rows, index = input_data["data"], input_data["index"]
        if not isinstance(rows, list) or not rows or len(index) != len(rows):
            raise ValueError(f"index has {len(index)} entries for {len(rows)} rows")
        for row in rows:
            if not (isinstance(row, list) and len(row) == 2 and all(isinstance(v, str) for v in row)):
                raise ValueError("every row must be [image (base64 string), text (string)]")
        raw = [base64.b64decode(image, validate=True) for image, _ in rows]
        with self._lock:
            number = self.scored
            self.scored += 1
        if raw[0][:2] == b"\x1f\x8b":
            return [self._score_volume(raw[0], rows[0][1])]
        return [self._score_image(number, row, data, text) for row, (data, (_, text)) in enumerate(zip(raw, rows, strict=True))]

    def _score_image(self, number: int, row: int, png: bytes, text: str) -> dict:
        if png[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError(f"row {row} is not a PNG")
        image = Image.open(io.BytesIO(png))
        if image.mode != "RGB" or image.size != (SIZE, SIZE):
            raise ValueError(f"row {row} is {image.mode} {image.size}; the model needs RGB {SIZE}x{SIZE}")
        pixels = np.asarray(image)
        prompts = [p.strip() for p in text.split("&")]
        with self._lock:
            self.images.append(pixels)
            self.prompts.append(text)
        masks = self._masks_2d(pixels[:, :, 0], prompts)
        if (number, row) in self.corrupt_rows:
            masks = masks[:, :512]
        features = {"data": base64.b64encode(masks.tobytes()).decode(), "shape": list(masks.shape), "dtype": "uint8"}
        encoded = repr(features) if self.python_literal else json.dumps(features)
        return {"image_features": encoded, "text_features": [_category(p) for p in prompts]}

    def _masks_2d(self, gray: np.ndarray, prompts: list[str]) -> np.ndarray:
        outline = _largest(ndimage.binary_fill_holes(gray > OUTSIDE_LEVEL))
        if outline is not None and _is_radiograph(gray):
            return self._masks_radiograph(gray, outline, prompts)
        body = ndimage.binary_fill_holes(gray >= DARK_LEVEL)
        labels, count = ndimage.label(body)
        masks = np.repeat(np.where(body, 0, OUTSIDE_BODY).astype(np.uint8)[None], len(prompts), axis=0)
        if count == 0:
            return masks
        largest = 1 + int(np.argmax(ndimage.sum_labels(body, labels, range(1, count + 1))))
        trunk = labels == largest
        lung = trunk & (gray < DARK_LEVEL)
        image_right = np.arange(SIZE)[None, :] > float(np.nonzero(trunk)[1].mean())
        patient_left = image_right if not self.mirror_sides else ~image_right
        for index, prompt in enumerate(prompts):
            if prompt in ("left lung", "right lung"):
                masks[index][lung & (patient_left if prompt == "left lung" else ~patient_left)] = INSIDE
        return masks

    def _masks_radiograph(self, gray: np.ndarray, outline: np.ndarray, prompts: list[str]) -> np.ndarray:
        masks = np.repeat(np.where(outline, 0, OUTSIDE_BODY).astype(np.uint8)[None], len(prompts), axis=0)
        found = radiograph_regions(gray, outline)
        if found is None:
            return masks
        lungs, heart = found
        columns = np.nonzero(outline)[1]
        image_right = np.arange(gray.shape[1])[None, :] > float(columns.mean())
        patient_left = image_right if not self.mirror_sides else ~image_right
        for index, prompt in enumerate(prompts):
            if prompt == "left lung":
                masks[index][lungs & patient_left] = INSIDE
            elif prompt == "right lung":
                masks[index][lungs & ~patient_left] = INSIDE
            elif prompt == "heart":
                masks[index][heart] = INSIDE
        return masks

    def _score_volume(self, gz: bytes, prompt: str) -> dict:
        image = nib.Nifti1Image.from_bytes(gzip.decompress(gz))
        if not np.array_equal(io_orientation(image.affine), [[0, 1], [1, 1], [2, 1]]):
            raise ValueError("the 3D volume is not in RAS order; the model reorients it and the mask would not match")
        with self._lock:
            self.volumes.append(image)
            self.prompts.append(prompt)
        hu = np.asarray(image.dataobj, dtype=np.float32)
        mask = np.zeros(hu.shape, dtype=np.uint8)
        if prompt in ("left lung", "right lung"):
            dark = hu < -400
            for k in range(hu.shape[2]):
                body = ndimage.binary_fill_holes(~dark[:, :, k])
                labels, count = ndimage.label(body)
                if count == 0:
                    continue
                trunk = labels == 1 + int(np.argmax(ndimage.sum_labels(body, labels, range(1, count + 1))))
                centre = float(np.nonzero(trunk)[0].mean())
                # RAS: the first axis runs towards the patient's right.
                patient_left = np.arange(hu.shape[0])[:, None] < centre
                side = patient_left if prompt == "left lung" else ~patient_left
                mask[:, :, k] = trunk & dark[:, :, k] & side
        result = nib.Nifti1Image(mask, image.affine)
        data = base64.b64encode(gzip.compress(result.to_bytes())).decode()
        return {"nifti_file": json.dumps({"data": data})}


def _category(prompt: str) -> str:
    if "lung" in prompt:
        return "lung"
    return "heart anatomies" if "heart" in prompt else "other"


def _largest(mask: np.ndarray) -> np.ndarray | None:
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    return labels == 1 + int(np.argmax(ndimage.sum_labels(mask, labels, range(1, count + 1))))


def _is_radiograph(gray: np.ndarray) -> bool:
    """Dark just inside the body's left and right edges (a CT may be cut at the top or bottom, never at the
    sides): the median over rows of the brightest pixel 2-12 px inside each edge. The body is what is
    brighter than RIM_OUTLINE_LEVEL, above the noise of the air in a CT's field of view."""
    outline = _largest(ndimage.binary_fill_holes(gray > RIM_OUTLINE_LEVEL))
    if outline is None:
        return False
    rows = np.flatnonzero(outline.any(axis=1))
    first = np.argmax(outline[rows], axis=1)
    last = outline.shape[1] - 1 - np.argmax(outline[rows, ::-1], axis=1)
    depth = np.arange(2, _RIM_PX)
    columns = outline.shape[1] - 1
    left = gray[rows[:, None], np.clip(first[:, None] + depth, 0, columns)].max(axis=1)
    right = gray[rows[:, None], np.clip(last[:, None] - depth, 0, columns)].max(axis=1)
    return float(np.median(np.concatenate([left, right]))) < RADIOGRAPH_RIM_LEVEL


def radiograph_regions(gray: np.ndarray, outline: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The lung fields (the two largest dark regions inside the body) and the cardiac shadow, or None."""
    dark = ndimage.binary_opening(outline & (gray < RADIOGRAPH_LUNG_LEVEL))
    labels, count = ndimage.label(dark)
    if count < 2:
        return None
    sizes = ndimage.sum_labels(dark, labels, range(1, count + 1))
    lungs = np.isin(labels, 1 + np.argsort(sizes)[-2:])
    return lungs, _cardiac_shadow(gray, lungs)


def body_outline(gray: np.ndarray) -> np.ndarray | None:
    return _largest(ndimage.binary_fill_holes(gray > OUTSIDE_LEVEL))


def _cardiac_shadow(gray: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """The largest bright region between the two lung fields' inner edges, below their middle."""
    labels, _ = ndimage.label(lungs)
    found = [labels == n for n in (1, 2)]
    image_left, image_right = sorted(found, key=lambda m: float(np.nonzero(m)[1].mean()))
    between = np.zeros_like(lungs)
    for row in np.flatnonzero(image_left.any(axis=1) & image_right.any(axis=1)):
        between[row, np.flatnonzero(image_left[row]).max() + 1 : np.flatnonzero(image_right[row]).min()] = True
    candidates = between & (gray >= RADIOGRAPH_LUNG_LEVEL)
    candidates[: int(np.nonzero(lungs)[0].mean())] = False
    # Below the heart the right lung field ends on the liver's dome and the gap between the fields
    # widens sharply: rows much wider than the typical one are diaphragm, not heart.
    widths = candidates.sum(axis=1)
    if widths.any():
        candidates[widths > 1.3 * np.median(widths[widths > 0])] = False
    shadow = _largest(ndimage.binary_opening(candidates, iterations=2))
    return shadow if shadow is not None else np.zeros_like(lungs)
