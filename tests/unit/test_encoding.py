"""Sequences encoded by tools/results/encoding.py are the bytes pydicom writes, or left to pydicom."""

from __future__ import annotations

import warnings

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from tools.results.common import dataset_bytes
from tools.results.encoding import freeze_sequence, mark_encoded

pytestmark = pytest.mark.unit


def _dataset(**item_values: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPInstanceUID = "1.2.3.4"
    items = []
    for number in range(1, 4):
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = ["-166.000000", "-171.699997", str(-27.5 + number)]
        item.PlanePositionSequence = [position]
        content = Dataset()
        content.DimensionIndexValues = [1, number]
        item.FrameContentSequence = [content]
        segment = Dataset()
        segment.ReferencedSegmentNumber = number
        item.SegmentIdentificationSequence = [segment]
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121322", "DCM", "Source image"
        item.PurposeOfReferenceCodeSequence = [code]
        item.ReferencedSOPInstanceUID = f"1.2.3.{number}"
        item.SpatialLocationsPreserved = "YES"
        for keyword, value in item_values.items():
            setattr(item, keyword, value)
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = items
    return ds


def _frozen_bytes(ds: Dataset) -> tuple[bool, bytes]:
    frozen = freeze_sequence(ds, "PerFrameFunctionalGroupsSequence")
    if frozen:
        mark_encoded(ds)
    return frozen, dataset_bytes(ds)


def test_frozen_sequence_is_byte_identical_to_pydicoms() -> None:
    frozen, data = _frozen_bytes(_dataset())
    assert frozen
    assert data == dataset_bytes(_dataset())


@pytest.mark.parametrize(
    "values", [{"ContentDate": "20260102"}, {"ContentTime": "030405"}, {"ContentDescription": "Röntgen"}]
)
def test_what_pydicom_treats_specially_stays_with_pydicom(values: dict[str, object]) -> None:
    frozen, data = _frozen_bytes(_dataset(**values))
    assert not frozen
    assert data == dataset_bytes(_dataset(**values))


def test_a_value_over_64_kb_goes_out_as_un_like_pydicom_writes_it() -> None:
    long_text = "\\".join(["123.4567"] * 9000)
    frozen, data = _frozen_bytes(_dataset(ContourData=long_text))
    assert frozen
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that it writes the value as UN
        assert data == dataset_bytes(_dataset(ContourData=long_text))
