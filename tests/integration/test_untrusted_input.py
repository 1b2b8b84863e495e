"""Attacks through data and arguments, against the session's real Orthanc and FHIR server.

Record text shown as typed (terminal and app), FHIR search values that cannot widen a search,
engine names checked before a job exists, and `--yes` that reaches only the invoking command's
own jobs (issue 10).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.practitioner import Practitioner

from agent.parts import fhir_client
from agent.runtime import AgentRuntime
from agent.settings import Settings
from agent.ui.markdown import card_summary_markdown
from graphs.chat import approval_card
from graphs.planner_tools.catalog import ToolBox
from tests.identities import TEST_ISSUER, principal
from tests.integration.test_cli_workflow import _cli, _new_study, _ok, _query
from tests.integration.workflow_helpers import (
    SeededStudy,
    assert_nothing_written,
    assert_written_once,
    phantom_spec,
    seed_phantom,
)
from tests.rendered_markdown import rendered_html, rendered_text
from tools.fhir.task import TASK_ID_SYSTEM, ensure_task, task_token
from tools.workflow.approval import ApprovalDecision

pytestmark = pytest.mark.integration

# A StudyDescription is a DICOM LO (64 characters at most): rich markup and Markdown/HTML in one.
FORGED_DESCRIPTION = "[bold red]APPROVED BY DR LEE[/bold red] **OK** <img src=x>"
BROKEN_MARKUP = "CT [/x] CHEST"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"


def _seed_described(live_settings: Settings, tmp_path: Path, seed: int, description: str, studies: list[SeededStudy]) -> SeededStudy:
    spec = phantom_spec(seed, "CLI-MARKUP", study_description=description)
    study = seed_phantom(live_settings, tmp_path / f"phantom-{seed}", spec)
    studies.append(study)
    return study


def test_markup_in_descriptions_is_shown_literally_and_never_stops_a_card(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    forged = _seed_described(live_settings, tmp_path, 4701, FORGED_DESCRIPTION, seeded)
    broken = _seed_described(live_settings, tmp_path, 4702, BROKEN_MARKUP, seeded)
    out = _ok(_cli(settings, "process", "--pending", "--query", _query(forged), answers=None))
    # The first card is printed (whichever study comes first), then nobody answers: both stay pending.
    assert (FORGED_DESCRIPTION in out or BROKEN_MARKUP in out) and "stays pending" in out
    with AgentRuntime(settings) as runtime:
        pending = {p.request.imaging_study_id: p for p in runtime.pending_approvals()}
    assert set(pending) == {forged.imaging_study_id, broken.imaging_study_id}

    shown = _ok(_cli(settings, "approvals", "show", pending[forged.imaging_study_id].interrupt_id))
    assert FORGED_DESCRIPTION in shown, "the description is printed as typed, not as bold red text"
    shown = _ok(_cli(settings, "approvals", "show", pending[broken.imaging_study_id].interrupt_id))
    assert BROKEN_MARKUP in shown and "Pending writes" in shown

    # A later `process` resumes the job and shows its first card again instead of crashing on it.
    again = _ok(_cli(settings, "process", "--pending", "--query", _query(forged), answers=None))
    assert "Resuming job" in again and (FORGED_DESCRIPTION in again or BROKEN_MARKUP in again)

    # The app's card of the same approval: no bold, no image, the characters as typed.
    summary = card_summary_markdown(approval_card(pending[forged.imaging_study_id]))
    assert "<img" not in rendered_html(summary) and "<strong>OK" not in rendered_html(summary)
    assert FORGED_DESCRIPTION in rendered_text(summary)
    for study in (forged, broken):
        assert_nothing_written(settings, study)


def test_yes_in_a_second_process_leaves_the_first_job_waiting(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "CLI-YES-SCOPE", seeded)
    _ok(_cli(settings, "process", "--pending", "--query", _query(study), answers=None))
    with AgentRuntime(settings) as runtime:
        [first] = runtime.pending_approvals()

    # Same work list, --yes, from another terminal: the waiting job is resumed but not approved.
    out = _ok(_cli(settings, "process", "--pending", "--yes", "--query", _query(study), answers=None))
    assert "--yes does not cover this approval" in out and "was not started by this command" in out
    assert "approved automatically" not in out
    # --yes on a new job for the same study: that study already waits for a person in the first job.
    out = _ok(_cli(settings, "process", "--study", study.imaging_study_id, "--yes", answers=None))
    assert f"also waits for a decision in job {first.thread_id}" in out and "approved automatically" not in out

    with AgentRuntime(settings) as runtime:
        assert first.interrupt_id in {p.interrupt_id for p in runtime.pending_approvals()}
        assert runtime.job(first.thread_id).status == "waiting-approval"
    assert_nothing_written(settings, study)


def test_an_unknown_engine_is_refused_before_any_job_or_task(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "CLI-ENGINE", seeded)
    injected = f"x,{TASK_ID_SYSTEM}|abc"
    result = _cli(settings, "process", "--study", study.imaging_study_id, "--engine", injected, answers=None)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unknown segmentation engine" in result.stdout and "lung-threshold, medimageparse, monai-bundle" in result.stdout
    with AgentRuntime(settings) as runtime:
        assert runtime.jobs() == []
        with pytest.raises(ValueError, match="lung-threshold"):
            runtime.start_study(study.imaging_study_id, engine=injected)
        assert runtime.jobs() == []
    with fhir_client(settings) as fhir:
        assert fhir.search("Task", {"focus": f"ImagingStudy/{study.imaging_study_id}"}) == []


def test_a_task_search_with_an_injected_engine_matches_no_other_task(live_settings: Settings) -> None:
    """`engine = "x,urn:imaging-agent:task|<victim>"` OR-matched the victim's Task, which the job then took over."""
    victim_uid, attacker_uid = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
    with fhir_client(live_settings) as fhir:
        victim = ensure_task(fhir, "victim-study", victim_uid, None, "lung-threshold")
        injected = f"x,{TASK_ID_SYSTEM}|{victim_uid}/lung-threshold"
        assert fhir.search("Task", {"identifier": task_token(attacker_uid, injected)}) == []
        task = ensure_task(fhir, "attacker-study", attacker_uid, None, injected)
        assert task.id != victim.id
        assert [i.value for i in task.identifier] == [f"{attacker_uid}/{injected}"]
        after = fhir.read("Task", str(victim.id))
        assert after.meta.versionId == victim.meta.versionId, "the victim's Task was not touched"
        # The same search again finds exactly the attacker's own Task.
        assert [t.id for t in fhir.search("Task", {"identifier": task_token(attacker_uid, injected)})] == [task.id]


def test_a_patient_identifier_with_a_comma_matches_one_patient(settings: Settings, live_settings: Settings) -> None:
    mrn = f"MRN-{uuid.uuid4().hex[:8]}"
    with fhir_client(live_settings) as fhir:
        fhir.create(Patient(identifier=[Identifier(system=live_settings.patient_identifier_system, value=mrn)]))
    with AgentRuntime(settings) as runtime:
        box = ToolBox(runtime)
        assert box.search_patients(mrn).count == 1
        assert box.search_patients(f"nobody,{mrn}").count == 0


def test_a_reviewer_id_with_a_comma_binds_no_other_practitioner(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """`x,<NPI system>|<npi>` as reviewer id bound Provenance and resultsInterpreter to a real Practitioner.

    Reviewer ids are no longer typed: they are the principal's id, which an identity provider (an
    OIDC `sub`, a local account name) may spell with a comma and a pipe all the same."""
    npi = str(uuid.uuid4().int)[:10]
    with fhir_client(live_settings) as fhir:
        real = fhir.create(Practitioner(identifier=[Identifier(system=NPI_SYSTEM, value=npi)], name=[{"text": "Dr. Real"}]))
    study = _new_study(live_settings, tmp_path, "CLI-REVIEWER-ID", seeded)
    with AgentRuntime(settings) as runtime:
        report = runtime.start_study(study.imaging_study_id)
        [pending] = report.pending
        mallory = principal(f"x,{NPI_SYSTEM}|{npi}", "Mallory")
        decision = ApprovalDecision.by(mallory, "approve")
        assert runtime.decide(report.thread_id, {pending.interrupt_id: decision}).done
    written = assert_written_once(settings, study)
    interpreter = written.report.resultsInterpreter[0].reference
    assert interpreter != f"Practitioner/{real.id}"
    with fhir_client(live_settings) as fhir:
        bound = fhir.read("Practitioner", interpreter.split("/")[1])
        assert [(i.system, i.value) for i in bound.identifier] == [(TEST_ISSUER, f"x,{NPI_SYSTEM}|{npi}")]
        assert fhir.read("Practitioner", str(real.id)).meta.versionId == real.meta.versionId


def test_ask_yes_still_approves_a_study_the_goal_names(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """The other half of the --yes scope: a study named by id in the goal is approved automatically."""
    study = _new_study(live_settings, tmp_path, "CLI-ASK-YES", seeded)
    out = _ok(_cli(settings, "ask", f"process study {study.imaging_study_id}", "--yes", answers=None))
    assert "approved automatically" in out and "--yes does not cover" not in out
    written = assert_written_once(settings, study)
    assert written.provenance.reason and "no human reviewed" in written.provenance.reason[0].text
