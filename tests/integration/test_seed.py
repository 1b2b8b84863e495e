"""Seeding into the real Orthanc and FHIR server: complete, correct, and idempotent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent.parts import fhir_client, pacs_client
from agent.seed import SeedError, seed_datasets, seed_folder
from agent.settings import PROJECT_ROOT, Settings
from tests.conftest import pacs_env
from tools.fhir.builders import uid_search_token
from tools.fhir.worklist import find_worklist
from tools.imaging.volume import read_series_dir
from tools.phantom import PhantomSpec, make_phantom, write_phantom

pytestmark = pytest.mark.integration


def test_seed_twice_stores_and_creates_nothing_twice(live_settings: Settings, tmp_path: Path) -> None:
    phantom = make_phantom(PhantomSpec(slices=16, rows=96, columns=96, seed=101, patient_id="SEED-101"))
    write_phantom(phantom, tmp_path)
    datasets = read_series_dir(tmp_path)

    [first] = seed_datasets(live_settings, datasets)
    assert (first.stored, first.already_present, first.imaging_study_created) == (16, 0, True)
    [second] = seed_datasets(live_settings, datasets)
    assert (second.stored, second.already_present, second.imaging_study_created) == (0, 16, False)
    assert second.imaging_study_id == first.imaging_study_id
    assert second.patient_resource_id == first.patient_resource_id

    with fhir_client(live_settings) as fhir:
        studies = fhir.search("ImagingStudy", {"identifier": uid_search_token(phantom.study_instance_uid)})
        patients = fhir.search("Patient", {"identifier": f"{live_settings.patient_identifier_system}|SEED-101"})
        worklist = find_worklist(fhir)
    assert len(studies) == 1 and len(patients) == 1
    study = studies[0]
    assert study.status == "registered"
    assert study.subject.reference == f"Patient/{patients[0].id}"
    assert (study.numberOfSeries, study.numberOfInstances) == (1, 16)
    assert study.series[0].uid == phantom.series_instance_uid
    assert study.series[0].modality.code == "CT"
    assert {i.uid for i in study.series[0].instance} == set(phantom.sop_instance_uids)
    assert phantom.study_instance_uid in {item.study_instance_uid for item in worklist}

    with pacs_client(live_settings) as pacs:
        stored = pacs.search_instances(phantom.study_instance_uid)
    assert {i.sop_instance_uid for i in stored} == set(phantom.sop_instance_uids)


def test_seed_of_missing_folder_names_it(live_settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(SeedError, match="no-such-folder"):
        seed_folder(live_settings, missing)


def test_cli_seed_default_phantom_then_pending_lists_it(live_settings: Settings, tmp_path: Path) -> None:
    """The embedded default of `make demo`: the full-size phantom, seeded by the CLI."""
    env = {
        **os.environ,
        "COLUMNS": "400",
        "IMAGING_AGENT_RUN_DIR": str(tmp_path),
        **pacs_env(live_settings),
        "IMAGING_AGENT_FHIR_URL": live_settings.fhir_url,
    }
    cli = str(PROJECT_ROOT / ".venv" / "bin" / "imaging-agent")
    for _ in range(2):
        seeded = subprocess.run([cli, "seed"], env=env, capture_output=True, text=True, timeout=600)
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    assert "existing" in seeded.stdout, "the second seed must find the ImagingStudy, not create another"
    assert (tmp_path / "demo" / "phantom-seed-0" / "lung_masks.npz").exists()
    assert len(list((tmp_path / "demo" / "phantom-seed-0" / "dicom").glob("*.dcm"))) >= 100
    listed = subprocess.run([cli, "pending"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "PHANTOM" in listed.stdout or "Patient/" in listed.stdout
    assert "waiting at" in listed.stdout
