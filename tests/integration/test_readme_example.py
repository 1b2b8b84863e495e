"""The README's Python example runs as written, against private services (the docs stay true)."""

from __future__ import annotations

import json
import os
import pwd
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import services
from agent.seed import seed_datasets
from agent.settings import PROJECT_ROOT, Settings
from tests.conftest import make_service_settings, pacs_env
from tests.integration.listings import result_series
from tools.imaging.volume import read_series_dir
from tools.phantom import PhantomSpec, make_phantom, write_phantom

pytestmark = pytest.mark.integration


@pytest.fixture()
def private_services(tmp_path: Path) -> Iterator[Settings]:
    settings = make_service_settings(tmp_path / "services")
    services.up(settings)
    yield settings
    services.down(settings)


def test_readme_python_example(private_services: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    spec = PhantomSpec(slices=60, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0, seed=601, patient_id="DOC-0601")
    write_phantom(make_phantom(spec), tmp_path / "dicom")
    [seeded] = seed_datasets(private_services, read_series_dir(tmp_path / "dicom"))
    for name, value in {
        "IMAGING_AGENT_RUN_DIR": str(tmp_path / "run"),
        **pacs_env(private_services),
        "IMAGING_AGENT_FHIR_URL": private_services.fhir_url,
        "IMAGING_AGENT_LLM_PROVIDER": "offline",
        # The example decides as the OS account running it, which must be listed as a radiologist.
        "IMAGING_AGENT_LOCAL_RADIOLOGISTS": json.dumps([pwd.getpwuid(os.getuid()).pw_name]),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's

    readme = (PROJECT_ROOT / "README.md").read_text()
    example = re.search(r"### Python\n```python\n(.*?)```", readme, re.S)
    assert example, "the README's Python example is missing"
    exec(compile(example.group(1), "README.md", "exec"), {})

    printed = capsys.readouterr().out
    assert f"ImagingStudy/{seeded.imaging_study_id}: completed" in printed
    assert sorted(result_series(private_services, seeded.study_instance_uid)) == ["RTSTRUCT", "SEG", "SR"]
