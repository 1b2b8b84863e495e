"""DicomwebClient and DimseClient against the real Orthanc (+ DICOMweb plugin) started by
the test command (`live_settings`). Every test writes its own UIDs, so tests do not see
each other's data and a rerun on a kept Orthanc is harmless."""

from __future__ import annotations

import secrets
import string
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from agent.parts import dimse_client, pacs_client
from agent.settings import Settings
from tools.dicomweb.client import DicomwebClient
from tools.dimse.client import DimseClient

pytestmark = pytest.mark.integration


def token() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(8))


def synthetic_ct_series(patient_name: str, slices: int = 3, size: int = 32) -> list[Dataset]:
    """A small CT series with random HU-like pixels and fresh UIDs."""
    rng = np.random.default_rng()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    patient_id = f"SYN-{token()}"
    datasets = []
    for index in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyDescription, ds.AccessionNumber = "20240102", "101500", "CT chest synthetic", token()
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", 2, "synthetic 2.5 mm"
        ds.BodyPartExamined, ds.SliceThickness = "CHEST", "2.5"
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [0.0, 0.0, -2.5 * index]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
        ds.PixelData = rng.integers(-1024, 2000, size=(size, size), dtype=np.int16).tobytes()
        datasets.append(ds)
    return datasets


def with_uids(ds: Dataset, purpose: str) -> Dataset:
    """The TotalSegmentator example has its UIDs blanked: give it stable ones."""
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[purpose, ds.file_meta.MediaStorageSOPInstanceUID])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[purpose, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[purpose, "series"])
    return ds


@pytest.fixture
def dicomweb(live_settings: Settings) -> DicomwebClient:
    return pacs_client(live_settings)


@pytest.fixture
def dimse(dicom_settings: Settings) -> DimseClient:
    """The DICOM server is off by default: the DIMSE tests run against an Orthanc that turns it on."""
    return dimse_client(dicom_settings)


@pytest.fixture
def dimse_pacs(dicom_settings: Settings) -> DicomwebClient:
    """DICOMweb on that same Orthanc, to read back what C-STORE sent."""
    return pacs_client(dicom_settings)


def test_ping(dicomweb: DicomwebClient) -> None:
    assert dicomweb.ping() is True


def test_synthetic_stow_in_batches_then_qido_then_wado_round_trip(live_settings: Settings) -> None:
    client = pacs_client(live_settings.model_copy(update={"dicomweb_stow_batch_size": 2}))
    series = synthetic_ct_series(f"Synthetic^{token()}", slices=5)
    study_uid, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID

    result = client.store(series)

    assert result.ok, result.failed
    assert sorted(result.stored) == sorted(ds.SOPInstanceUID for ds in series)
    assert result.bytes_sent > 5 * 32 * 32 * 2

    [study] = client.search_studies({"StudyInstanceUID": study_uid})
    assert study.patient_id == series[0].PatientID
    assert study.patient_name == str(series[0].PatientName)
    assert study.study_description == "CT chest synthetic"
    assert study.modalities == ["CT"]
    assert (study.number_of_series, study.number_of_instances) == (1, 5)

    [found] = client.search_series(study_uid)
    assert found.series_instance_uid == series_uid
    assert (found.modality, found.series_number, found.body_part_examined) == ("CT", 2, "CHEST")
    assert found.slice_thickness_mm == 2.5
    assert found.number_of_instances == 5

    instances = client.search_instances(study_uid, series_uid)
    assert sorted(i.instance_number for i in instances) == [1, 2, 3, 4, 5]
    assert {i.sop_class_uid for i in instances} == {CTImageStorage}

    returned = {ds.SOPInstanceUID: ds for ds in client.retrieve_series(study_uid, series_uid)}
    assert set(returned) == {ds.SOPInstanceUID for ds in series}
    for original in series:
        back = returned[original.SOPInstanceUID]
        assert back.PixelData == original.PixelData
        assert np.array_equal(back.pixel_array, original.pixel_array)

    one = client.retrieve_instance(study_uid, series_uid, series[2].SOPInstanceUID)
    assert one.InstanceNumber == 3 and one.PixelData == series[2].PixelData


def test_instance_exists(dicomweb: DicomwebClient) -> None:
    [ds] = synthetic_ct_series(f"Exists^{token()}", slices=1)
    assert dicomweb.instance_exists(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) is False

    assert dicomweb.store([ds]).ok

    assert dicomweb.instance_exists(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) is True
    assert dicomweb.instance_exists(ds.StudyInstanceUID, ds.SeriesInstanceUID, generate_uid()) is False


def test_restoring_the_same_instance_is_harmless(dicomweb: DicomwebClient) -> None:
    series = synthetic_ct_series(f"Again^{token()}", slices=2)
    assert dicomweb.store(series).ok

    again = dicomweb.store(series)

    assert again.ok, again.failed
    assert len(dicomweb.search_instances(series[0].StudyInstanceUID)) == 2


def test_wildcard_patient_name_search_finds_the_study(dicomweb: DicomwebClient) -> None:
    family = f"Wild{token()}"
    series = synthetic_ct_series(f"{family}^Card", slices=1)
    assert dicomweb.store(series).ok
    study_uid = series[0].StudyInstanceUID

    for pattern in (f"{family}^C*", f"{family}*", f"{family.lower()}^card", f"*{family[4:]}^Card"):
        found = dicomweb.search_studies({"PatientName": pattern})
        assert [s.study_instance_uid for s in found] == [study_uid], pattern
    assert dicomweb.search_studies({"PatientName": f"{family}^X*"}) == []


@pytest.mark.realdata
def test_lidc_slices_round_trip_pixel_exact(dicomweb: DicomwebClient, shared_data: Path) -> None:
    files = sorted((shared_data / "lidc-idri-0001" / "dicom").glob("*.dcm"))[:4]
    originals = [pydicom.dcmread(f) for f in files]
    study_uid, series_uid = originals[0].StudyInstanceUID, originals[0].SeriesInstanceUID

    result = dicomweb.store(originals)

    assert result.ok, result.failed
    assert sorted(result.stored) == sorted(ds.SOPInstanceUID for ds in originals)
    returned = {ds.SOPInstanceUID: ds for ds in dicomweb.retrieve_series(study_uid, series_uid)}
    for original in originals:
        back = returned[original.SOPInstanceUID]
        assert back.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert back.PixelData == original.PixelData
        assert np.array_equal(back.pixel_array, original.pixel_array)
    assert any(s.study_instance_uid == study_uid for s in dicomweb.search_studies({"PatientID": "LIDC-IDRI-0001"}))


@pytest.mark.realdata
def test_jpeg2000_series_comes_back_as_stored(dicomweb: DicomwebClient, shared_data: Path) -> None:
    files = sorted((shared_data / "totalsegmentator-example" / "dicom").iterdir())
    originals = [with_uids(pydicom.dcmread(f), "test_pacs_live jpeg2000 stow") for f in files]
    study_uid, series_uid = originals[0].StudyInstanceUID, originals[0].SeriesInstanceUID

    result = dicomweb.store(originals)

    assert result.ok, result.failed
    returned = {ds.SOPInstanceUID: ds for ds in dicomweb.retrieve_series(study_uid, series_uid)}
    assert set(returned) == {ds.SOPInstanceUID for ds in originals}
    for original in originals:
        back = returned[original.SOPInstanceUID]
        assert back.file_meta.TransferSyntaxUID == JPEG2000Lossless
        assert back.PixelData == original.PixelData
    assert np.array_equal(returned[originals[0].SOPInstanceUID].pixel_array, originals[0].pixel_array)


def test_dimse_echo(dimse: DimseClient) -> None:
    dimse.echo()


def test_dimse_store_then_find(dimse: DimseClient, dimse_pacs: DicomwebClient) -> None:
    family = f"Dimse{token()}"
    series = synthetic_ct_series(f"{family}^Store", slices=2)
    study_uid = series[0].StudyInstanceUID

    result = dimse.store(series)

    assert result.ok, result.failed
    assert sorted(result.stored) == sorted(ds.SOPInstanceUID for ds in series)
    assert result.bytes_sent > 2 * 32 * 32 * 2
    [study] = dimse.find_studies({"StudyInstanceUID": study_uid})
    assert study.patient_id == series[0].PatientID
    assert study.number_of_instances == 2
    assert study.study_date is not None and study.study_date.isoformat() == "2024-01-02"
    by_name = dimse.find_studies({"PatientName": f"{family}^S*"})
    assert [s.study_instance_uid for s in by_name] == [study_uid]
    back = dimse_pacs.retrieve_instance(study_uid, series[0].SeriesInstanceUID, series[0].SOPInstanceUID)
    assert back.PixelData == series[0].PixelData


@pytest.mark.realdata
def test_dimse_store_negotiates_jpeg2000(dimse: DimseClient, dimse_pacs: DicomwebClient, shared_data: Path) -> None:
    files = sorted((shared_data / "totalsegmentator-example" / "dicom").iterdir())[:2]
    originals = [with_uids(pydicom.dcmread(f), "test_pacs_live jpeg2000 c-store") for f in files]

    result = dimse.store(originals)

    assert result.ok, result.failed
    first = originals[0]
    back = dimse_pacs.retrieve_instance(first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID)
    assert back.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert back.PixelData == first.PixelData
