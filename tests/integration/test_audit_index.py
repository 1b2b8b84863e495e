"""The input/output audit index: after an approval, `imaging-agent audit STUDY_UID` prints the chain."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from agent.parts import pacs_client
from agent.runtime import AgentRuntime
from agent.settings import Settings
from tests.conftest import pacs_env
from tests.dicom_checks import dciodvfy_errors
from tests.integration.workflow_helpers import approve, phantom_spec, retire, seed_phantom
from tools.phantom import make_phantom, write_phantom

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).parent / "imaging-agent"


def _audit(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGING_AGENT_")}
    env.update(IMAGING_AGENT_RUN_DIR=str(settings.run_dir), **pacs_env(settings), IMAGING_AGENT_FHIR_URL=settings.fhir_url,
               COLUMNS="400")
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(CLI), "audit", *args], env=env, cwd=settings.run_dir, capture_output=True, text=True, timeout=120)


def test_an_approved_study_has_its_chain_from_inputs_to_stored_results(
    settings: Settings, live_settings: Settings, tmp_path: Path
) -> None:
    spec = phantom_spec(4901, "AUDIT-CHAIN")
    study = seed_phantom(live_settings, tmp_path / "phantom", spec)
    try:
        assert _audit(settings, study.study_instance_uid).returncode == 1, "nothing indexed before the approval"
        with AgentRuntime(settings) as runtime:
            report = runtime.start_study(study.imaging_study_id)
            [pending] = report.pending
            runtime.decide(report.thread_id, {pending.interrupt_id: approve("dr-audit")})
            chains = runtime.services.lineage.chains(study.study_instance_uid)
        writes = {w.sop_instance_uid: w for w in pending.request.dicom_writes}
        assert {c.sop_instance_uid for c in chains} == set(writes)
        for chain in chains:
            assert chain.sha256 == writes[chain.sop_instance_uid].sha256
            assert chain.approved_by == "dr-audit" and not chain.automatic
            assert chain.destination == f"DICOMweb {settings.dicomweb_url}"
            assert len(chain.inputs) == spec.slices
        printed = _audit(settings, study.study_instance_uid, "--inputs")
        assert printed.returncode == 0, printed.stdout + printed.stderr
        for uid in writes:
            assert uid in printed.stdout
        assert "dr-audit" in printed.stdout
        # The inputs are the series' instances, each with its own hash.
        phantom = [pydicom.dcmread(p, stop_before_pixels=True) for p in write_phantom(make_phantom(spec), tmp_path / "again")]
        assert {i.sop_instance_uid for i in chains[0].inputs} == {str(ds.SOPInstanceUID) for ds in phantom}
        assert len({i.sha256 for i in chains[0].inputs}) == spec.slices
        assert _audit(settings, "1.2/../3").returncode == 2
    finally:
        retire(live_settings, [study])


def test_the_overlay_series_and_the_kos_are_approved_stored_and_indexed_when_turned_on(
    settings: Settings, live_settings: Settings, tmp_path: Path
) -> None:
    """IMAGING_AGENT_RESULT_OVERLAY and _KOS: in the approval, in the PACS as approved, in the lineage."""
    spec = phantom_spec(4902, "AUDIT-AIR")
    study = seed_phantom(live_settings, tmp_path / "phantom", spec)
    turned_on = settings.model_copy(update={"result_overlay": True, "result_kos": True})
    try:
        with AgentRuntime(turned_on) as runtime:
            report = runtime.start_study(study.imaging_study_id)
            [pending] = report.pending
            writes = pending.request.dicom_writes
            assert sorted(w.kind for w in writes) == ["KO", "RTSTRUCT", "SC", "SC", "SC", "SEG", "SR"]
            runtime.decide(report.thread_id, {pending.interrupt_id: approve("dr-air")})
            chains = runtime.services.lineage.chains(study.study_instance_uid)
        assert {c.sop_instance_uid for c in chains} == {w.sop_instance_uid for w in writes}
        assert all(len(c.inputs) == spec.slices for c in chains)
        with pacs_client(settings) as pacs:
            for write in writes:
                if write.kind not in ("SC", "KO"):
                    continue
                held = pacs.retrieve_instance_bytes(study.study_instance_uid, write.series_instance_uid, write.sop_instance_uid)
                assert held is not None and hashlib.sha256(held).hexdigest() == write.sha256
                stored = tmp_path / f"{write.sop_instance_uid}.dcm"
                stored.write_bytes(held)
                assert dciodvfy_errors(stored) == [], write.kind
    finally:
        retire(live_settings, [study])
