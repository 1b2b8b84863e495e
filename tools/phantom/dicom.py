"""Writing the phantom as a CT series: one CT Image Storage Part 10 file per slice."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from tools.phantom.spec import MAX_HU, MIN_HU, RESCALE_INTERCEPT, Phantom, PhantomGeometry, phantom_geometry
from tools.results.common import new_dataset

logger = logging.getLogger(__name__)

MANUFACTURER = "imaging-agent phantom"


def write_phantom(phantom: Phantom, out_dir: Path) -> list[Path]:
    """Write one CT Image Storage file per slice (PS3.3 A.3, PS3.10 file format).

    Files are Explicit VR Little Endian, named by Instance Number (``CT0001.dcm`` is the
    most superior slice); rewriting the same phantom gives identical files. The returned
    paths are in array order.
    """
    spec = phantom.spec
    expected = (spec.slices, spec.rows, spec.columns)
    if phantom.hu.shape != expected or len(phantom.sop_instance_uids) != spec.slices:
        raise ValueError(
            f"phantom series {phantom.series_instance_uid}: pixel array {phantom.hu.shape} and "
            f"{len(phantom.sop_instance_uids)} SOP Instance UIDs do not match the spec {expected}; "
            "regenerate it with make_phantom(spec)"
        )
    low, high = int(phantom.hu.min()), int(phantom.hu.max())
    if low < MIN_HU or high > MAX_HU:
        raise ValueError(
            f"phantom series {phantom.series_instance_uid}: HU range [{low}, {high}] does not fit "
            f"12-bit storage with intercept {RESCALE_INTERCEPT}; clip to [{MIN_HU}, {MAX_HU}]"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(
            f"cannot write phantom series {phantom.series_instance_uid}: {out_dir} is a file; "
            "pass a directory"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    geometry = phantom_geometry(spec)
    stored = (phantom.hu.astype(np.int32) - RESCALE_INTERCEPT).astype(np.uint16)
    paths: list[Path] = []
    for k in range(spec.slices):
        ds = _slice_dataset(phantom, geometry, k, stored[k])
        path = out_dir / f"CT{geometry.instance_numbers[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    logger.info(
        "wrote phantom series %s (%d slices) to %s",
        phantom.series_instance_uid,
        len(paths),
        out_dir,
    )
    return paths


def redate(paths: list[Path], study_date: str) -> None:
    """Give a written series another StudyDate (YYYYMMDD): a patient's earlier study for longitudinal demos."""
    for path in paths:
        ds = dcmread(path)
        ds.StudyDate = study_date
        ds.SeriesDate = study_date
        ds.ContentDate = study_date
        ds.save_as(path, enforce_file_format=True)


def _ds(value: float) -> str:
    """A DS value of at most 16 characters (PS3.5 6.2)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _slice_dataset(
    phantom: Phantom, geometry: PhantomGeometry, k: int, pixels: np.ndarray
) -> Dataset:
    """One CT Image IOD instance (PS3.3 A.3) for slice ``k`` in array order."""
    spec = phantom.spec
    sop_uid = phantom.sop_instance_uids[k]
    position = geometry.image_positions_patient[k]
    date, time = "20240101", "120000"

    ds = new_dataset(CTImageStorage, sop_uid, date, time)
    # Patient (C.7.1.1)
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    # General Study (C.7.2.1)
    ds.StudyInstanceUID = phantom.study_instance_uid
    ds.StudyDate = date
    ds.StudyTime = time
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = spec.study_description
    # General Series (C.7.3.1)
    ds.Modality = "CT"
    ds.SeriesInstanceUID = phantom.series_instance_uid
    ds.SeriesNumber = 1
    ds.SeriesDate = date
    ds.SeriesTime = time
    ds.SeriesDescription = "Synthetic chest phantom"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = spec.patient_position
    # Frame of Reference (C.7.4.1)
    ds.FrameOfReferenceUID = phantom.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment (C.7.5.1)
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "synthetic chest CT"
    ds.SoftwareVersions = "1"
    # General Acquisition (C.7.10.1) and General Image (C.7.6.1)
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = date
    ds.AcquisitionTime = time
    ds.InstanceNumber = geometry.instance_numbers[k]
    ds.ContentDate = date
    ds.ContentTime = time
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    # Image Plane (C.7.6.2)
    ds.PixelSpacing = [_ds(v) for v in geometry.pixel_spacing_mm]
    ds.ImageOrientationPatient = [_ds(v) for v in geometry.image_orientation_patient]
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.SliceThickness = _ds(spec.slice_thickness_mm)
    ds.SliceLocation = _ds(position[2])
    # Image Pixel (C.7.6.3) with the CT Image constraints (C.8.2.1)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    # CT Image (C.8.2.1)
    ds.RescaleIntercept = str(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.ReconstructionDiameter = _ds(min(spec.rows, spec.columns) * spec.pixel_spacing_mm)
    ds.GantryDetectorTilt = "0"
    # VOI LUT (C.11.2): lung window first, mediastinal second.
    ds.WindowCenter = ["-600", "40"]
    ds.WindowWidth = ["1500", "400"]
    ds.WindowCenterWidthExplanation = ["LUNG", "MEDIASTINUM"]
    return ds
