"""dciodvfy (Debian dicom3tools) as a test oracle: PS3.3 IOD checks by an independent tool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import Dataset

from tools.results.common import dataset_bytes

DCIODVFY = Path("/usr/bin/dciodvfy")


def dciodvfy_report(path: Path) -> str:
    """dciodvfy's whole report on one DICOM file (it writes to stdout and stderr)."""
    if not DCIODVFY.is_file():
        pytest.fail(f"{DCIODVFY} not found: install Debian's dicom3tools (apt-get install dicom3tools)")
    run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=300, check=False)
    return run.stdout + run.stderr


def dciodvfy_errors(path: Path) -> list[str]:
    """Every line of dciodvfy's report on ``path`` that contains "Error"."""
    return [line for line in dciodvfy_report(path).splitlines() if "Error" in line]


def dataset_errors(ds: Dataset, folder: Path, name: str = "object.dcm") -> list[str]:
    """dciodvfy's "Error" lines for a dataset, written as its exact Part 10 bytes into ``folder``."""
    path = folder / name
    path.write_bytes(dataset_bytes(ds))
    return dciodvfy_errors(path)
