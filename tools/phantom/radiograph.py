"""A chest radiograph of the phantom: a digitally reconstructed radiograph (DRR) written as DX.

The phantom's CT is summed along the anterior-posterior axis (attenuation relative to water,
``(HU + 1000) / 1000`` per voxel, times the row spacing: water-equivalent millimetres), the table
left out (a chest radiograph is taken standing). The image is shown the usual way: the patient's
head at the top, the patient's right on the image's left (Patient Orientation ``L\\F``), pixels
square at the phantom's in-plane spacing. The lungs and the heart are projected the same way,
so their exact shadows are known: ``Radiograph.left_lung`` etc. are the masks a segmentation of
the image should find (a pixel is in a structure when any voxel on its ray is; the lung fields
leave out the heart's shadow, as radiograph lung-field annotations do).

Header variants exercise the grayscale pipeline (tools/imaging/projection.py): ``standard``
(MONOCHROME2, a window), ``monochrome1`` (stored inverted), ``voi-lut`` (a VOI LUT Sequence
instead of the window) and ``imager-spacing-only`` (no Pixel Spacing; Imager Pixel Spacing with
an Estimated Radiographic Magnification Factor). Every variant shows the same picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid
from scipy import ndimage

from tools.phantom.dicom import MANUFACTURER, _ds
from tools.phantom.spec import Phantom, Tissue
from tools.results.common import new_dataset

RadiographVariant = Literal["standard", "monochrome1", "voi-lut", "imager-spacing-only"]
VARIANTS: tuple[RadiographVariant, ...] = ("standard", "monochrome1", "voi-lut", "imager-spacing-only")

BITS_STORED = 12
_TOP = 2**BITS_STORED - 1
# Stored value per water-equivalent millimetre: the phantom's thickest ray (spine and heart,
# about 300 mm of water) stays below the 12-bit top.
_PER_WATER_MM = 12.0
# The window shows the lungs (about 130 water mm on this phantom) dark and the heart (about 250) bright.
_WINDOW_LOW_MM, _WINDOW_HIGH_MM = 90.0, 300.0
_MAGNIFICATION = 1.1
_VIEW_CODES = {"PA": ("399348003", "SCT", "postero-anterior"), "AP": ("399182001", "SCT", "antero-posterior")}
_UID_NAMESPACE = "imaging-agent phantom radiograph v1"


@dataclass
class Radiograph:
    """A DX dataset of the phantom and the exact projected masks (rows x columns, bool)."""

    dataset: Dataset
    left_lung: np.ndarray
    right_lung: np.ndarray
    heart: np.ndarray
    pixel_spacing_mm: float
    """at the patient; the ``imager-spacing-only`` variant stores it times the magnification"""


def _canonical(array: np.ndarray, phantom: Phantom) -> np.ndarray:
    """The phantom's array in HFS order (inferior to superior, columns to the patient's left)."""
    return array[::-1, :, ::-1] if phantom.spec.patient_position == "FFS" else array


def _project(mask: np.ndarray, zoom: float) -> np.ndarray:
    shadow = mask.any(axis=1)[::-1].astype(np.float32)
    return ndimage.zoom(shadow, (zoom, 1.0), order=1) >= 0.5


def make_radiograph(phantom: Phantom, variant: RadiographVariant = "standard", *, view: str = "PA") -> Radiograph:
    """The DRR of ``phantom`` as a DX For Presentation dataset (PS3.3 A.26), with its exact masks."""
    spec = phantom.spec
    labels = _canonical(phantom.labels, phantom)
    hu = _canonical(phantom.hu, phantom).astype(np.float32)
    table = (labels == Tissue.TABLE_SHELL) | (labels == Tissue.TABLE_CORE)
    relative = np.where(table, 0.0, np.clip((hu + 1000.0) / 1000.0, 0.0, None))
    water_mm = relative.sum(axis=1)[::-1] * spec.pixel_spacing_mm
    zoom = spec.slice_thickness_mm / spec.pixel_spacing_mm
    image = ndimage.zoom(water_mm, (zoom, 1.0), order=1)
    stored = np.clip(np.rint(image * _PER_WATER_MM), 0, _TOP).astype(np.uint16)
    if variant == "monochrome1":
        stored = (_TOP - stored).astype(np.uint16)
    heart = _project(labels == Tissue.HEART, zoom)
    # The radiographic lung field: the lungs' shadow where the heart's does not cover it.
    left = _project((labels == Tissue.LUNG_LEFT) | (labels == Tissue.VESSEL_LEFT), zoom) & ~heart
    right = _project((labels == Tissue.LUNG_RIGHT) | (labels == Tissue.VESSEL_RIGHT), zoom) & ~heart
    ds = _dataset(phantom, variant, view, stored)
    return Radiograph(dataset=ds, left_lung=left, right_lung=right, heart=heart, pixel_spacing_mm=spec.pixel_spacing_mm)


def mislabelled_radiograph(phantom: Phantom) -> Dataset:
    """A DX dataset of the phantom holding one of its CT slices (in a lung-and-soft-tissue window):
    what a wrong series or a wrong Modality sends, for the input checks."""
    ds = make_radiograph(phantom).dataset
    slice_ = (phantom.hu[phantom.hu.shape[0] // 2].astype(np.int32) + 1024).clip(0, _TOP).astype(np.uint16)
    ds.Rows, ds.Columns = (int(n) for n in slice_.shape)
    ds.PixelData = slice_.tobytes()
    ds.WindowCenter, ds.WindowWidth = "524", "1500"
    return ds


def _voi_lut(low: int, high: int) -> Dataset:
    """A VOI LUT Sequence item equivalent to a linear window from ``low`` to ``high`` (stored values)."""
    entries = high - low + 1
    item = Dataset()
    item.LUTDescriptor = [entries, low, 12]
    item.LUTExplanation = "linear window"
    item.add_new("LUTData", "US", [round(v) for v in np.linspace(0, _TOP, entries)])
    return item


def _dataset(phantom: Phantom, variant: RadiographVariant, view: str, stored: np.ndarray) -> Dataset:
    spec = phantom.spec
    series_uid = generate_uid(entropy_srcs=[_UID_NAMESPACE, "series", phantom.series_instance_uid, variant, view])
    sop_uid = generate_uid(entropy_srcs=[_UID_NAMESPACE, "sop", series_uid])
    date, time = "20240101", "120000"
    ds = new_dataset(DigitalXRayImageStorageForPresentation, sop_uid, date, time)
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = phantom.study_instance_uid
    ds.StudyDate, ds.StudyTime = date, time
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = "XR CHEST (synthetic phantom radiograph)"
    # DX Series (C.8.11.1)
    ds.Modality = "DX"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 2
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = f"Synthetic chest radiograph {view}"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "synthetic chest radiograph"
    ds.SoftwareVersions = "1"
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDate, ds.AcquisitionTime = date, time
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.ImageLaterality = "U"
    anatomy = Dataset()
    anatomy.CodeValue, anatomy.CodingSchemeDesignator, anatomy.CodeMeaning = "51185008", "SCT", "Chest"
    ds.AnatomicRegionSequence = [anatomy]
    ds.AcquisitionContextSequence = []
    # Image Pixel and DX Image (C.8.11.3)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if variant == "monochrome1" else "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in stored.shape)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS_STORED, BITS_STORED - 1, 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if variant == "monochrome1" else 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.PresentationLUTShape = "INVERSE" if variant == "monochrome1" else "IDENTITY"
    low, high = round(_WINDOW_LOW_MM * _PER_WATER_MM), round(_WINDOW_HIGH_MM * _PER_WATER_MM)
    if variant == "monochrome1":
        low, high = _TOP - high, _TOP - low
    if variant == "voi-lut":
        ds.VOILUTSequence = [_voi_lut(low, high)]
    else:
        ds.WindowCenter = _ds((low + high + 1) / 2)
        ds.WindowWidth = _ds(high - low + 1)
    # DX Detector (C.8.11.4) and Positioning (C.8.11.5)
    ds.DetectorType = "DIRECT"
    if variant == "imager-spacing-only":
        detector = spec.pixel_spacing_mm * _MAGNIFICATION
        ds.ImagerPixelSpacing = [_ds(detector), _ds(detector)]
        ds.EstimatedRadiographicMagnificationFactor = _ds(_MAGNIFICATION)
    else:
        ds.ImagerPixelSpacing = [_ds(spec.pixel_spacing_mm), _ds(spec.pixel_spacing_mm)]
        ds.PixelSpacing = [_ds(spec.pixel_spacing_mm), _ds(spec.pixel_spacing_mm)]
    ds.ViewPosition = view
    if view in _VIEW_CODES:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = _VIEW_CODES[view]
        code.ViewModifierCodeSequence = []
        ds.ViewCodeSequence = [code]
    ds.PositionerType = "NONE"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    return ds
