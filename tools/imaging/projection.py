"""A projection radiograph (CR / DX) as a one-plane :class:`Volume` of presentation values.

A radiograph has no Image Position or Orientation (Patient) and no Frame of Reference: it is
a projection, so there is no 3D grid to check. What the engines and writers need is the image
as a radiologist sees it and its pixel size:

- **Grey levels** (PS3.3 C.11, the grayscale pipeline): the Modality LUT (Rescale Slope and
  Intercept, or a Modality LUT Sequence), then the first VOI transform (a VOI LUT Sequence,
  else Window Center / Width, else the image's own range), then MONOCHROME1 inverted, so that
  the stored array always reads 0.0 black .. 1.0 white, dense structures (bone, heart) bright.
- **Pixel size**: Pixel Spacing when the image carries it (calibrated at the patient), else
  Imager Pixel Spacing divided by the Estimated Radiographic Magnification Factor when given
  (PS3.3 C.8.11.4.1.1), else Imager Pixel Spacing as it is (at the detector: areas come out
  larger than the patient's by the magnification squared; the series' `spacing_source` says so).
- **Orientation**: Patient Orientation (0020,0020), the directions of the rows and columns
  (e.g. ``L\\F``: along a row towards the patient's left, down a column towards the feet). The
  volume's geometry puts those directions in LPS so "left lung" means the patient's left. An
  image without it is read as the usual frontal display (``L\\F``), which the card says.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from tools.imaging.geometry import Geometry
from tools.imaging.series_checks import SeriesRefusedError
from tools.imaging.volume import Volume

log = logging.getLogger(__name__)

PROJECTION_MODALITIES = frozenset({"CR", "DX"})
FRONTAL_VIEWS = frozenset({"PA", "AP"})
LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "LLD", "RLD"})

_LETTER_DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "L": (1.0, 0.0, 0.0),
    "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0),
    "A": (0.0, -1.0, 0.0),
    "H": (0.0, 0.0, 1.0),
    "F": (0.0, 0.0, -1.0),
}
_DEFAULT_ORIENTATION = ("L", "F")


class ProjectionInfo(BaseModel):
    """What the header says about one radiograph, as the card and the measurements need it."""

    model_config = ConfigDict(frozen=True)

    sop_instance_uid: str
    view_position: str | None
    photometric: str
    spacing_mm: tuple[float, float]
    """(row spacing, column spacing) as used for measurements"""
    spacing_source: str
    """"pixel spacing", "imager pixel spacing / magnification" or "imager pixel spacing (detector plane)" """
    voi: str
    """which VOI transform made the grey levels"""
    orientation: tuple[str, str]
    orientation_assumed: bool


def is_projection(modality: str | None) -> bool:
    return (modality or "").upper() in PROJECTION_MODALITIES


def view_of(ds: Dataset) -> str | None:
    value = str(ds.get("ViewPosition", "") or "").strip().upper()
    return value or None


def choose_frontal(datasets: Sequence[Dataset], series_uid: str) -> Dataset:
    """The frontal (PA, then AP) image of a radiograph series; the only image when there is one."""
    if not datasets:
        raise SeriesRefusedError(series_uid, "empty", "the series holds no image", "Send the radiograph to the PACS again.")
    for wanted in ("PA", "AP"):
        for ds in datasets:
            if view_of(ds) == wanted:
                return ds
    unknown = [ds for ds in datasets if view_of(ds) is None]
    if len(datasets) == 1 or len(unknown) == 1:
        return unknown[0] if unknown else datasets[0]
    views = ", ".join(sorted({view_of(ds) or "none" for ds in datasets}))
    raise SeriesRefusedError(
        series_uid,
        "no-frontal-view",
        f"it has {len(datasets)} radiographs with View Position {views} and none is frontal (PA or AP)",
        "Send the frontal chest radiograph, or set its View Position.",
    )


def lateral_of(datasets: Sequence[Dataset]) -> Dataset | None:
    """A lateral image of the same series, when there is one (a report draft may use it)."""
    return next((ds for ds in datasets if view_of(ds) in LATERAL_VIEWS), None)


def _spacing(ds: Dataset, series_uid: str, uid: str) -> tuple[tuple[float, float], str]:
    if "PixelSpacing" in ds and ds.PixelSpacing:
        row, column = (float(v) for v in ds.PixelSpacing)
        return (row, column), "pixel spacing"
    if "ImagerPixelSpacing" in ds and ds.ImagerPixelSpacing:
        row, column = (float(v) for v in ds.ImagerPixelSpacing)
        factor = float(ds.get("EstimatedRadiographicMagnificationFactor", 0) or 0)
        if factor > 0:
            return (row / factor, column / factor), "imager pixel spacing / magnification"
        return (row, column), "imager pixel spacing (detector plane)"
    raise SeriesRefusedError(
        series_uid,
        "no-geometry",
        f"radiograph {uid} has neither Pixel Spacing nor Imager Pixel Spacing, so no area can be measured",
        "Send the image as the modality produced it (DX For Presentation, with its spacing).",
    )


def _orientation(ds: Dataset, series_uid: str, uid: str) -> tuple[tuple[str, str], bool]:
    raw = ds.get("PatientOrientation")
    values = [str(v).strip().upper() for v in raw] if raw else []
    if len(values) != 2 or not all(values):
        return _DEFAULT_ORIENTATION, True
    # Oblique values such as "LF" name two letters; the first is the dominant direction.
    first = tuple(v[0] for v in values)
    if any(letter not in _LETTER_DIRECTIONS for letter in first):
        raise SeriesRefusedError(
            series_uid, "no-geometry", f"radiograph {uid} has Patient Orientation {values}, not made of L R A P H F",
            "Correct the image's Patient Orientation (0020,0020) at the modality.",
        )
    row, column = (np.asarray(_LETTER_DIRECTIONS[letter]) for letter in first)
    if abs(float(row @ column)) > 0.5:
        raise SeriesRefusedError(
            series_uid, "no-geometry", f"radiograph {uid} has Patient Orientation {values}: rows and columns run the same way",
            "Correct the image's Patient Orientation (0020,0020) at the modality.",
        )
    return (first[0], first[1]), False


def presentation_values(ds: Dataset) -> tuple[np.ndarray, str]:
    """The grey levels a viewer would show, 0.0 black .. 1.0 white, and which VOI transform made them."""
    stored = ds.pixel_array
    modality = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if "VOILUTSequence" in ds and ds.VOILUTSequence:
        voi = "VOI LUT Sequence"
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        shown = np.asarray(apply_voi_lut(modality.astype(np.int64), ds, index=0), dtype=np.float64)
        top = float(2 ** int(descriptor[2]) - 1)
        low, high = 0.0, top
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center = float(np.atleast_1d(ds.WindowCenter)[0])
        width = float(np.atleast_1d(ds.WindowWidth)[0])
        voi = f"window C{center:g}/W{width:g}"
        shown = modality
        # PS3.3 C.11.2.1.2.1, the LINEAR function.
        low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    else:
        voi = "full range"
        shown = modality
        low, high = float(shown.min()), float(shown.max())
    span = max(high - low, 1e-6)
    values = np.clip((shown - low) / span, 0.0, 1.0)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        values = 1.0 - values
    return values.astype(np.float32), voi


def read_projection(ds: Dataset) -> tuple[Volume, ProjectionInfo]:
    """One CR / DX image as a one-plane Volume of presentation values, and what its header said.

    Raises:
        SeriesRefusedError: not a CR or DX image, a multi-frame or colour image, no pixel size,
            an unreadable Patient Orientation or undecodable pixels.
    """
    uid = str(ds.get("SOPInstanceUID", "?"))
    series_uid = str(ds.get("SeriesInstanceUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    if modality not in PROJECTION_MODALITIES:
        raise SeriesRefusedError(
            series_uid, "wrong-modality", f"image {uid} is {modality or 'without a modality'}, not CR or DX",
            "Choose a radiograph series.",
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise SeriesRefusedError(
            series_uid, "undecodable-pixels", f"radiograph {uid} is {photometric or 'of no photometric interpretation'}",
            "Send the radiograph as MONOCHROME1 or MONOCHROME2 (grayscale).",
        )
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise SeriesRefusedError(series_uid, "multi-frame", f"radiograph {uid} has several frames", "Send one image per view.")
    spacing, spacing_source = _spacing(ds, series_uid, uid)
    orientation, assumed = _orientation(ds, series_uid, uid)
    try:
        values, voi = presentation_values(ds)
    except (ValueError, RuntimeError, AttributeError) as exc:
        raise SeriesRefusedError(
            series_uid, "undecodable-pixels", f"the pixels of radiograph {uid} cannot be decoded ({exc})",
            "Send it uncompressed or in a transfer syntax this machine decodes.",
        ) from exc
    row_dir = np.asarray(_LETTER_DIRECTIONS[orientation[0]])
    column_dir = np.asarray(_LETTER_DIRECTIONS[orientation[1]])
    normal = np.cross(row_dir, column_dir)
    rows, columns = values.shape
    geometry = Geometry(
        origin=(0.0, 0.0, 0.0),
        spacing=(spacing[1], spacing[0], 1.0),
        direction=(_vec(row_dir), _vec(column_dir), _vec(normal)),
        shape=(1, rows, columns),
    )
    volume = Volume(
        array=values[None],
        geometry=geometry,
        series_instance_uid=series_uid,
        study_instance_uid=str(ds.StudyInstanceUID),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        modality=modality,
        sop_instance_uids=[uid],
        sop_class_uid=str(ds.SOPClassUID),
    )
    info = ProjectionInfo(
        sop_instance_uid=uid,
        view_position=view_of(ds),
        photometric=photometric,
        spacing_mm=spacing,
        spacing_source=spacing_source,
        voi=voi,
        orientation=orientation,
        orientation_assumed=assumed,
    )
    log.info("Read radiograph %s of series %s: %dx%d, %s, %s", uid, series_uid, rows, columns, spacing_source, voi)
    return volume, info


def _vec(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))
