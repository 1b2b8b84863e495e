"""The `medimageparse` engine: every slice (2D) or the volume (3D) to the endpoint, masks back on the grid.

Left and right are checked against the geometry afterwards: a left/right mask pair whose
sides disagree with patient x is reassigned by position and flagged (see `_enforce_sides`).
The engine's own flags (reassigned sides, unexpected model categories) travel with the
result; the QA flags are added later, once, by tools/segmentation/qa.py.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tools.http import RetryPolicy
from tools.http.errors import ServiceUnavailableError
from tools.imaging.projection import is_projection
from tools.imaging.volume import Volume
from tools.segmentation.base import EngineError, QAFlag, SegmentationResult, StructureMask, resolve_targets
from tools.segmentation.medimageparse.client import MedImageParseClient, check_endpoint
from tools.segmentation.medimageparse.nifti import canonical_nifti, on_canonical_grid
from tools.segmentation.medimageparse.view import Placement, from_model_mask, model_view, to_model_image
from tools.segmentation.medimageparse.wire import (
    MASK_THRESHOLD,
    MODEL_SIZE,
    ScoringError,
    as_scores,
    build_scoring_request,
    build_volume_request,
    parse_scoring_response,
    parse_volume_response,
)
from tools.segmentation.prompts import PromptGroup, build_prompts

log = logging.getLogger(__name__)

ENGINE_NAME = "medimageparse"
ADAPTER_VERSION = "1.0.0"
Mode = Literal["2d", "3d"]
# Share of a structure's slices answered with an unexpected category above which it is a warning.
_CATEGORY_WARNING_SHARE = 0.1


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
                if self.mode == "3d" and not is_projection(volume.modality):
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
            parameters=self._parameters(groups, volume.modality),
        )

    def _parameters(self, groups: list[PromptGroup], modality: str) -> dict[str, str]:
        """What the model was asked and how the pixels were shown to it; not the endpoint or batch size.

        A radiograph always goes as one 2D image, whatever the mode (3D reads volumes only)."""
        projection = is_projection(modality)
        parameters = {"mode": "2d" if projection else self.mode, "mask_threshold": str(MASK_THRESHOLD)}
        if self.mode == "3d" and not projection:  # the volume goes in Hounsfield units, one request per prompt
            parameters["prompts"] = " & ".join(item.prompt for group in groups for item in group.items)
            return parameters
        parameters["image_size"] = str(MODEL_SIZE)
        for group in groups:
            window = group.window
            parameters[f"prompts_{window.name}_window"] = group.text
            if window.percentiles:
                parameters[f"{window.name}_window_percentiles"] = f"{window.low_hu:g}..{window.high_hu:g}"
            else:
                unit = "" if window.presentation else "_hu"
                parameters[f"{window.name}_window{unit}"] = f"{window.low_hu:g}..{window.high_hu:g}"
        return parameters

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
        view = model_view(volume)
        shown = view.forward(volume.array)
        shape = (int(shown.shape[1]), int(shown.shape[2]))
        placement = Placement.fit(shape, (view.spacing[1], view.spacing[2]))
        n_slices = shown.shape[0]
        for group in groups:
            window = group.window.for_volume(volume.array)
            masks = {item.target: view.forward(tallies[item.target].mask) for item in group.items}
            for start in range(0, n_slices, self.batch_size):
                stop = min(n_slices, start + self.batch_size)
                where = f"slices {start}-{stop - 1} of {n_slices}, prompt '{group.text}'"
                images = [to_model_image(shown[k], window, placement) for k in range(start, stop)]
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
        canonical, view = canonical_nifti(volume)
        nifti_gz = gzip.compress(canonical.to_bytes(), compresslevel=6, mtime=0)
        for group in groups:
            for item in group.items:
                where = f"whole volume, prompt '{item.prompt}'"
                payload = self._post(client, build_volume_request(nifti_gz, item.prompt), volume, where)
                try:
                    result, affine = parse_volume_response(payload)
                    result = on_canonical_grid(result, affine, canonical)
                except ScoringError as exc:
                    raise self._failure(volume, where, exc.detail) from exc
                # The 3D examples read the answer as a label map (0/1); 0-255 scores like 2D's are accepted too.
                labels = np.issubdtype(result.dtype, np.integer) and int(result.max(initial=0)) <= 1
                scores = as_scores(result.astype(bool) if labels else result)
                inside = scores >= MASK_THRESHOLD
                tally = tallies[item.target]
                tally.mask = view.backward(inside)
                count = int(np.count_nonzero(inside))
                tally.score_sum += float(scores[inside].sum(dtype=np.int64))
                tally.score_count += count
                tally.slices_with_mask = int(np.count_nonzero(tally.mask.any(axis=(1, 2))))



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
