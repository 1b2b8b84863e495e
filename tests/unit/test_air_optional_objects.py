"""The optional IHE AI Results objects on the phantom: the NOT FOR DIAGNOSIS overlay series and the KOS.

Read back with pydicom and checked by dciodvfy (0 errors); same result and time, same bytes.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from tests.dicom_checks import dciodvfy_errors
from tools.imaging.volume import Volume, assemble_volume, read_series_dir
from tools.phantom import PhantomSpec, make_phantom, write_phantom
from tools.results.package import ALL_FORMATS, OPTIONAL_FORMATS, ResultPackage, build_package
from tools.segmentation.base import SegmentationResult
from tools.segmentation.lung_threshold import LungThresholdEngine

pytestmark = pytest.mark.unit

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Built:
    def __init__(self, sources: list[Dataset], volume: Volume, result: SegmentationResult, package: ResultPackage) -> None:
        self.sources, self.volume, self.result, self.package = sources, volume, result, package

    def of_kind(self, kind: str) -> list[Dataset]:
        return [pydicom.dcmread(o.path) for o in self.package.objects if o.kind == kind]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    folder = tmp_path_factory.mktemp("air")
    spec = PhantomSpec(slices=40, rows=128, columns=128, pixel_spacing_mm=3.0, slice_thickness_mm=7.5)
    write_phantom(make_phantom(spec), folder / "source")
    sources = read_series_dir(folder / "source")
    volume = assemble_volume(sources)
    result = LungThresholdEngine().segment(volume, ["lungs"])
    package = build_package(
        sources, volume, result, folder / "out", formats=[*ALL_FORMATS, *OPTIONAL_FORMATS], created=CREATED
    )
    return Built(sources, volume, result, package)


def test_every_optional_object_passes_dciodvfy(built: Built) -> None:
    paths = [o.path for o in built.package.objects if o.kind in ("SC", "KO")]
    assert len(paths) == 4
    for path in paths:
        assert dciodvfy_errors(path) == [], path


def test_the_overlay_is_marked_not_for_diagnosis_in_the_header_and_in_the_pixels(built: Built) -> None:
    overlays = built.of_kind("SC")
    assert [int(ds.InstanceNumber) for ds in overlays] == [1, 2, 3]
    assert len({str(ds.SeriesInstanceUID) for ds in overlays}) == 1
    ct_uids = set(built.volume.sop_instance_uids)
    for ds in overlays:
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
        assert ds.StudyInstanceUID == built.volume.study_instance_uid
        assert ds.PatientID == built.sources[0].PatientID
        assert ds.Modality == "OT" and ds.BurnedInAnnotation == "YES"
        assert "NOT FOR DIAGNOSIS" in ds.SeriesDescription
        assert ds.ImageComments.startswith("NOT FOR DIAGNOSIS")
        [source] = ds.SourceImageSequence
        assert source.ReferencedSOPInstanceUID in ct_uids
        pixels = ds.pixel_array
        assert pixels.shape[2] == 3 and pixels.dtype == np.uint8
        # The burned-in band on top: red, with white text in it.
        band = pixels[:30].reshape(-1, 3)
        assert np.mean(np.all(band == (170, 0, 0), axis=1)) > 0.5
        assert np.any(np.all(band > 200, axis=1))
        # The structures' outlines in their colours below it (left lung blue, right lung orange).
        image = pixels[30:].reshape(-1, 3)
        for spec in (s.structure for s in built.result.structures):
            assert np.any(np.all(image == spec.color_rgb, axis=1)), spec.key


def test_the_key_object_selection_points_at_every_other_object(built: Built) -> None:
    [ko] = built.of_kind("KO")
    assert ko.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59" and ko.Modality == "KO"
    assert ko.StudyInstanceUID == built.volume.study_instance_uid
    assert ko.ConceptNameCodeSequence[0].CodeValue == "113000"  # Of Interest (CID 7010)
    others = {o.sop_instance_uid for o in built.package.objects if o.kind != "KO"}
    referenced = {
        str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for item in ko.ContentSequence
        if item.ValueType in ("IMAGE", "COMPOSITE")
    }
    assert referenced == others
    evidence = {
        str(instance.ReferencedSOPInstanceUID)
        for study in ko.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }
    assert evidence == others
    [description] = [item for item in ko.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "113012"]
    assert built.result.engine in description.TextValue


def test_same_result_same_bytes_and_nothing_optional_unless_asked(built: Built, tmp_path: Path) -> None:
    again = build_package(
        built.sources, built.volume, built.result, tmp_path / "again", formats=[*ALL_FORMATS, *OPTIONAL_FORMATS],
        created=CREATED,
    )
    assert [(o.kind, o.sha256) for o in again.objects] == [(o.kind, o.sha256) for o in built.package.objects]
    for o in again.objects:
        assert hashlib.sha256(Path(o.path).read_bytes()).hexdigest() == o.sha256
    plain = build_package(built.sources, built.volume, built.result, tmp_path / "plain", created=CREATED)
    assert [o.kind for o in plain.objects] == ["RTSTRUCT", "SEG", "SR"]
    with pytest.raises(ValueError, match="Key Object Selection"):
        build_package(built.sources, built.volume, built.result, tmp_path / "ko", formats=["ko", "png"], created=CREATED)
