"""The phantom's RTSTRUCT, SEG and SR are byte-identical across refactors.

Derived UIDs are deterministic and `created` fixes every timestamp, so the same phantom,
engine and time give the same bytes. The hashes below were taken on main before the layers
were straightened (issue 9); a change that alters them changes what radiologists approve and
must say so, here, on purpose.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tools.imaging.volume import assemble_volume, read_series_dir
from tools.phantom import PhantomSpec, make_phantom, write_phantom
from tools.results.package import build_package
from tools.segmentation.lung_threshold import LungThresholdEngine

pytestmark = pytest.mark.unit

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

EXPECTED_SHA256 = {
    ("HFS", "RTSTRUCT"): "c3ea329b44c28062761f7573f7c32cf572e68c2f0e34e2f86baae305328360d6",
    ("HFS", "SEG"): "aa0854dab1463eb2bf72bc8876c64c48bb4baf9bc342730c6dc61bbc59da4a1c",
    ("HFS", "SR"): "2a0ede821f68af4a8a4f737279c605a467b71e0358ccf9cbc93b73b7e219c3a1",
    ("FFS", "RTSTRUCT"): "bc80aa14a1e94f0844120f73d88e7c67f52726bce937645765c9b66d6a5cda7c",
    ("FFS", "SEG"): "34089fc9a035ef806202d5257b506ac0dc22a0bae79558c984eddf253157bfc4",
    ("FFS", "SR"): "e9bc14974c770f1b863490dc1be3aaa6136ff34428971d4ee196e20663f5d567",
}


@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_phantom_outputs_are_byte_identical(position: str, tmp_path: Path) -> None:
    spec = PhantomSpec(
        slices=40, rows=128, columns=128, pixel_spacing_mm=3.0, slice_thickness_mm=7.5, patient_position=position
    )
    write_phantom(make_phantom(spec), tmp_path / "source")
    source = read_series_dir(tmp_path / "source")
    volume = assemble_volume(source)
    result = LungThresholdEngine().segment(volume, ["lungs"])
    package = build_package(source, volume, result, tmp_path / "out", created=CREATED)

    got = {(position, o.kind): hashlib.sha256(Path(o.path).read_bytes()).hexdigest() for o in package.objects}
    assert got == {k: v for k, v in EXPECTED_SHA256.items() if k[0] == position}
