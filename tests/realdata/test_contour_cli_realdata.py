"""`imaging-agent contour` on a real chest CT (LIDC-IDRI-0001), run as the installed command.

Data: LIDC-IDRI (CC BY 3.0; Armato SG III et al., Med Phys 38(2):915-931, 2011; TCIA).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.dicom_checks import dciodvfy_errors

pytestmark = pytest.mark.realdata

COMMAND = Path(sys.executable).with_name("imaging-agent")


@dataclass
class Run:
    source: Path
    out: Path
    output: str
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def lidc_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    source = shared_data / "lidc-idri-0001" / "dicom"
    work = tmp_path_factory.mktemp("lidc-contour")
    out = work / "out"
    # The built-in engine, whatever a developer's .env says (run outside the project folder).
    env = {**os.environ, "IMAGING_AGENT_DEFAULT_ENGINE": "lung-threshold", "COLUMNS": "200"}
    run = subprocess.run(
        [str(COMMAND), "contour", str(source), "-o", str(out)],
        capture_output=True, text=True, cwd=work, env=env, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return Run(source, out, run.stdout, json.loads((out / "summary.json").read_text()))


def test_writes_every_output(lidc_run: Run) -> None:
    out = lidc_run.out
    assert {p.name for p in out.iterdir()} == {"rtstruct.dcm", "seg.dcm", "sr.dcm", "previews", "report.txt", "summary.json"}
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["axial_1.png", "axial_2.png", "axial_3.png", "coronal.png"]
    assert not out.with_name(".out.partial").exists()
    for entry in lidc_run.summary["objects"]:
        path = Path(entry["path"])
        assert path.parent == out
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["rtstruct.dcm", "seg.dcm", "sr.dcm"])
def test_dicom_outputs_pass_dciodvfy(lidc_run: Run, name: str) -> None:
    assert dciodvfy_errors(lidc_run.out / name) == []


def test_outputs_belong_to_the_source_study(lidc_run: Run) -> None:
    source = pydicom.dcmread(next(lidc_run.source.iterdir()), stop_before_pixels=True)
    assert lidc_run.summary["study_instance_uid"] == source.StudyInstanceUID
    assert lidc_run.summary["series_instance_uid"] == source.SeriesInstanceUID
    for name in ("rtstruct.dcm", "seg.dcm", "sr.dcm"):
        ds = pydicom.dcmread(lidc_run.out / name, stop_before_pixels=True)
        assert ds.StudyInstanceUID == source.StudyInstanceUID, name
        assert ds.PatientID == source.PatientID, name
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID, name


def test_summary_lists_both_lungs_with_adult_volumes(lidc_run: Run) -> None:
    structures = {s["key"]: s["measurements"] for s in lidc_run.summary["structures"]}
    assert set(structures) == {"left-lung", "right-lung"}
    for key, measured in structures.items():
        assert 1000.0 <= measured["volume_ml"] <= 4000.0, (key, measured["volume_ml"])
        assert -950.0 < measured["mean_hu"] < -600.0, key
    # LPS: the patient's left is +x, so the left lung's box lies right of the right lung's.
    assert structures["left-lung"]["bbox_mm"][0][0] > structures["right-lung"]["bbox_mm"][0][0]
    assert "Left lung" in lidc_run.output and "Right lung" in lidc_run.output
