"""How a CT slice becomes the model's 2D image, and how its masks come back onto the slice.

1. The slice is turned into the radiological view the model was trained on: anterior at the
   top, the patient's right on the image's left (columns run towards +x, the patient's left,
   rows towards +y, posterior; LPS, DICOM PS3.3 C.7.6.2.1.1). Feet-first or prone series are
   flipped into that view, so "left lung" means the same thing for every series. The view
   comes from tools/imaging/orientation.py, like every other view of a volume; it keeps the
   slices in their order and only turns each slice.
2. It is resized with its *physical* aspect ratio: non-square pixels are resampled to square
   ones in the same step, the longer side becomes 1024 pixels, and it is centred on a black
   1024x1024 canvas (the vendor client pads centred, with black, after windowing).
3. Windowed for the target (prompts.py), scaled to 0-255 and repeated into R, G and B.
4. Masks come back on that canvas: the padding is cut away, the rest resized to the slice's
   matrix (bilinear on the 0-255 score, then the 128 threshold, which keeps edges smooth)
   and the view undone, so each mask lies on the volume's own voxel grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tools.imaging.orientation import Reorientation, nearest_directions, reorient
from tools.imaging.projection import is_projection
from tools.imaging.volume import Volume
from tools.segmentation.base import EngineError
from tools.segmentation.medimageparse.wire import MASK_THRESHOLD, MODEL_SIZE
from tools.segmentation.prompts import Window


def axial_view(volume: Volume) -> Reorientation:
    """The view of ``volume`` the model reads: slices in their order, each anterior up and patient-left on the right.

    Raises:
        EngineError: the slices are not axial (the slice axis runs nearest to x or y).
    """
    slice_direction = nearest_directions(volume.geometry)[0]
    if slice_direction not in ("S", "I"):
        normal = np.asarray(volume.geometry.direction[2])
        raise EngineError(
            f"series {volume.series_instance_uid}: its slices are not axial (slice normal {normal.round(3).tolist()}); "
            "MedImageParse 2D reads axial CT slices. Use an axial reconstruction, the 3D mode, or another engine."
        )
    return reorient(volume.geometry, f"{slice_direction}PL")


def radiograph_view(volume: Volume) -> Reorientation:
    """A frontal radiograph as the model reads it: the head at the top, the patient's right on the image's left.

    Raises:
        EngineError: the image is not frontal (its plane faces the patient's side: a lateral view).
    """
    facing = nearest_directions(volume.geometry)[0]
    if facing not in ("P", "A"):
        raise EngineError(
            f"series {volume.series_instance_uid}: the radiograph is not frontal (its Patient Orientation makes it a "
            "lateral view); MedImageParse segments the lungs and heart on a PA or AP chest radiograph."
        )
    return reorient(volume.geometry, f"{facing}IL")


def model_view(volume: Volume) -> Reorientation:
    """The view the model reads: a radiograph as displayed, a CT's axial slices (`axial_view`)."""
    return radiograph_view(volume) if is_projection(volume.modality) else axial_view(volume)


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
    """A displayed slice in HU (a radiograph: presentation values) -> the 1024x1024 RGB uint8 image the model reads."""
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

