"""The phantom's RTSTRUCT, SEG and SR are byte-identical across refactors.

Derived UIDs are deterministic and `created` fixes every timestamp, so the same phantom,
engine and time give the same bytes. The hashes below were taken on main before the layers
were straightened (issue 9); a change that alters them changes what radiologists approve and
must say so, here, on purpose.

Retaken for lung-threshold 1.1.0 (issue 17): the phantom's masks and QA flags are the same
voxel for voxel as 1.0.0's (these hashes held through every 1.1 algorithm change); the bytes
differ only by the engine version written into the RTSTRUCT, SEG and SR.

SEG and SR retaken for issue 13: they now name the engine's parameters (TID 4019 Algorithm
Parameters; the SEG's Algorithm Parameters), the thresholds measured on the phantom among them.
The masks and the RTSTRUCT are unchanged.

The `contour` command builds the DICOM objects in a forked child while it measures (issue 11):
the same bytes either way.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tools.imaging.volume import assemble_volume, read_series_dir
from tools.phantom import PhantomSpec, make_phantom, write_phantom
from tools.results.package import build_package, fork_dicom_build
from tools.segmentation.lung_threshold import LungThresholdEngine

pytestmark = pytest.mark.unit

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

EXPECTED_SHA256 = {
    ("HFS", "RTSTRUCT"): "f6d2c01f91a47ab9cad633c1d3c18421caeec72b2b207f70e2d79ac94933e0a7",
    ("HFS", "SEG"): "e593fc5a330d24f0a0a57d2941e6e8ff1b0f5530babd42bf4287b8bcaca281ff",
    ("HFS", "SR"): "0ab71c4898b72109d7f978db24cd5ae2917c5886a6fb3ebecc85af74bd532c8a",
    ("FFS", "RTSTRUCT"): "f9c3db3ceb763c4e7a8a9f62568287c3509408e6ad2af88b86a730dac07d830e",
    ("FFS", "SEG"): "7a509989ddab379a7c2c98616388ebd382946900e265c56018c078883f53b208",
    ("FFS", "SR"): "74d8c61790e9cf856233bd9dadacf287abda7e8dc1796920228bd368066bebed",
}


@pytest.mark.parametrize("fork_dicom", [False, True], ids=["one-process", "forked"])
@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_phantom_outputs_are_byte_identical(position: str, fork_dicom: bool, tmp_path: Path) -> None:
    spec = PhantomSpec(
        slices=40, rows=128, columns=128, pixel_spacing_mm=3.0, slice_thickness_mm=7.5, patient_position=position
    )
    write_phantom(make_phantom(spec), tmp_path / "source")
    source = read_series_dir(tmp_path / "source")
    volume = assemble_volume(source)
    result = LungThresholdEngine().segment(volume, ["lungs"])
    if fork_dicom:
        with fork_dicom_build(source, volume) as dicom:
            package = build_package(source, volume, result, tmp_path / "out", created=CREATED, dicom=dicom)
    else:
        package = build_package(source, volume, result, tmp_path / "out", created=CREATED)

    got = {(position, o.kind): hashlib.sha256(Path(o.path).read_bytes()).hexdigest() for o in package.objects}
    assert got == {k: v for k, v in EXPECTED_SHA256.items() if k[0] == position}
