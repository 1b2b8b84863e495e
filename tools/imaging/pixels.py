"""Pixel data of a stacked series, decoded and in Hounsfield units.

Each slice goes through the Modality LUT (Rescale Slope/Intercept, PS3.3 C.11.1.1.2). A slice
that cannot be decoded (no decoder installed, truncated data) refuses the series with a
message that names the instance and what to install or fetch again.
"""

from __future__ import annotations

import logging

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from tools.imaging.series_checks import SeriesRefusedError, describe

logger = logging.getLogger(__name__)

# Which package decodes which compressed transfer syntax in pydicom 3 (PS3.5 Annex A.4).
_CODEC_PACKAGES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.80": "pyjpegls, or pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.81": "pyjpegls, or pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg and pylibjpeg-openjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg and pylibjpeg-openjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle (pydicom's own RLE decoder also needs numpy)",
}


def decode_volume(datasets: list[Dataset], series_uid: str) -> np.ndarray:
    """Decode every slice and apply its Modality LUT (Rescale Slope/Intercept, PS3.3 C.11.1.1.2).

    int16 when every slope is 1, every intercept whole and every value fits (CT as scanners
    write it); float32 otherwise. Slices are decoded one at a time straight into the volume,
    so at most one decoded slice exists besides it (a decoded copy of the whole series would
    double the memory held while the series is read).
    """
    rescales = [_rescale(ds) for ds in datasets]
    integral = all(slope == 1.0 and float(intercept).is_integer() for slope, intercept in rescales)
    out: np.ndarray | None = None
    int16 = np.iinfo(np.int16)
    for k, (dataset, (slope, intercept)) in enumerate(zip(datasets, rescales, strict=True)):
        pixels = _decode_slice(dataset, series_uid)
        if out is None:
            out = np.empty((len(datasets), *pixels.shape), dtype=np.int16 if integral else np.float32)
        if out.dtype == np.int16 and not (
            int16.min <= int(pixels.min()) + int(intercept) and int(pixels.max()) + int(intercept) <= int16.max
        ):
            # Out of int16's range after all: the slices so far are exact in float32 too.
            out = out.astype(np.float32)
        if out.dtype == np.int16:
            # Computed in int32 and written straight into the volume, without a temporary slice.
            np.add(pixels, int(intercept), out=out[k], dtype=np.int32, casting="unsafe")
        else:
            np.multiply(pixels, np.float32(slope), out=out[k], dtype=np.float32)
            out[k] += np.float32(intercept)
    if out is None:
        raise SeriesRefusedError(series_uid, "empty", f"series {series_uid} has no images to decode.", "Fetch the series again.")
    return out


def _rescale(dataset: Dataset) -> tuple[float, float]:
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if slope is None or intercept is None:
        # Absent rescale means stored values are already output values (identity Modality LUT).
        logger.warning("%s has no Rescale Slope/Intercept; using stored values as is", describe(dataset))
        return 1.0, 0.0
    return float(slope), float(intercept)


def _decode_slice(dataset: Dataset, series_uid: str) -> np.ndarray:
    file_meta = getattr(dataset, "file_meta", None)
    syntax = UID(str(file_meta.get("TransferSyntaxUID", "")) if file_meta is not None else "")
    syntax_name = f"{syntax.name} ({syntax})" if syntax else "an unknown transfer syntax"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as error:
        raise SeriesRefusedError(
            series_uid, "undecodable-pixels",
            f"{describe(dataset)} is encoded in {syntax_name}, which pydicom has no decoder for.",
            "Ask the PACS to send the series in Explicit VR Little Endian (transcoding), then retry.",
        ) from error
    if not decoder.is_available:
        raise SeriesRefusedError(
            series_uid, "undecodable-pixels",
            f"{describe(dataset)} is encoded in {syntax_name} and no decoder for it is installed.",
            f"Install {_CODEC_PACKAGES.get(str(syntax), 'a pydicom decoding plugin for it')}, "
            "or ask the PACS to send the series uncompressed.",
        )
    try:
        pixels, _ = decoder.as_array(dataset, index=0)
    # Decoding plugins signal broken or truncated data with these (pydicom wraps plugin
    # errors in RuntimeError; native data that is too short raises ValueError).
    except (RuntimeError, ValueError, AttributeError, KeyError, TypeError) as error:
        codec_advice = (
            f" If it persists, check that {_CODEC_PACKAGES.get(str(syntax), 'a decoder for it')} is installed."
            if syntax.is_compressed
            else ""
        )
        raise SeriesRefusedError(
            series_uid, "undecodable-pixels",
            f"The pixel data of {describe(dataset)} ({syntax_name}) could not be decoded: "
            f"{_one_line(str(error)).rstrip('.')}.",
            f"The file is probably truncated or corrupt: fetch the series again.{codec_advice}",
        ) from error
    if pixels.shape != (int(dataset.Rows), int(dataset.Columns)):
        raise SeriesRefusedError(
            series_uid, "undecodable-pixels",
            f"{describe(dataset)} decoded to shape {pixels.shape}, not one grey-scale "
            f"{int(dataset.Rows)}x{int(dataset.Columns)} image.",
            "Use a grey-scale CT series (one sample per pixel).",
        )
    return pixels


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines)[:500] if lines else "no reason given"

