"""`imaging-agent process` and `imaging-agent approvals` as a radiologist uses them in a terminal.

Each command runs as its own process (the installed console script) against the session's
Orthanc and FHIR server, with a fresh run directory; answers are typed on standard input.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.parts import fhir_client
from agent.runtime import AgentRuntime
from agent.settings import Settings
from tests.conftest import pacs_env
from tests.integration.workflow_helpers import (
    SeededStudy,
    assert_nothing_written,
    assert_written_once,
    phantom_spec,
    seed_phantom,
    task_of,
)
from tools.identity.os_account import os_account_issuer

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).parent / "imaging-agent"
# The reviewer at a terminal is the OS account of the process's real uid (listed as a radiologist).
REVIEWER = pwd.getpwuid(os.getuid()).pw_name
_seeds = itertools.count(4501)


def _new_study(live_settings: Settings, tmp_path: Path, patient_id: str, studies: list[SeededStudy]) -> SeededStudy:
    seed = next(_seeds)
    study = seed_phantom(live_settings, tmp_path / f"phantom-{seed}", phantom_spec(seed, patient_id))
    studies.append(study)
    return study


def _cli(
    settings: Settings, *args: str, answers: str | None = None, radiologists: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command; `answers` is typed on stdin (None: stdin closed, nobody to answer).

    $USER names someone else throughout: who decides must not follow it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGING_AGENT_")}
    env.update(
        IMAGING_AGENT_RUN_DIR=str(settings.run_dir),
        **pacs_env(settings),
        IMAGING_AGENT_FHIR_URL=settings.fhir_url,
        IMAGING_AGENT_LOCAL_RADIOLOGISTS=json.dumps([REVIEWER] if radiologists is None else radiologists),
        USER="dr-fake",
        LOGNAME="dr-fake",
        COLUMNS="200",
    )
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(CLI), *args],
        input=answers if answers is not None else "",
        env=env,
        cwd=settings.run_dir,  # no project .env is read
        capture_output=True,
        text=True,
        timeout=300,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _query(study: SeededStudy) -> str:
    return f"status=registered&modality=CT&subject={study.patient_reference}"


def _verifier_type(written: Any) -> tuple[str, Any]:
    [person] = [a for a in written.provenance.agent if a.type.coding[0].code != "assembler"]
    return person.type.coding[0].code, person


def test_process_study_approved_at_the_prompt(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "CLI-APPROVE", seeded)
    out = _ok(_cli(settings, "process", "--study", study.imaging_study_id, answers="y\n"))
    # The prompt showed what the reviewer decides on: structures with volumes, previews, pending writes.
    assert "Left lung" in out and "mL" in out and "Previews:" in out and ".png" in out
    assert "RTSTRUCT" in out and "Pending writes" in out
    assert "completed" in out and study.imaging_study_id[:12] in out
    written = assert_written_once(settings, study)
    kind, person = _verifier_type(written)
    assert kind == "verifier" and not written.provenance.reason
    assert written.report.resultsInterpreter[0].reference == person.who.reference
    with fhir_client(settings) as fhir:
        [identifier] = fhir.read("Practitioner", person.who.reference.split("/")[1]).identifier
    # The OS account of the real uid, vouched for by this host, whatever $USER says (it says dr-fake).
    assert identifier.value == REVIEWER != "dr-fake"
    assert identifier.system == os_account_issuer()


def test_process_study_rejected_with_a_reason(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "CLI-REJECT", seeded)
    out = _ok(_cli(settings, "process", "--study", study.imaging_study_id, answers="n\nwrong side\n"))
    assert "rejected" in out and "wrong side" in out
    task = task_of(settings, study)
    assert task.status == "rejected" and task.statusReason.text == "wrong side"
    assert any(REVIEWER in (n.text or "") for n in task.note or [])
    assert_nothing_written(settings, study)


def test_unanswered_approvals_are_answered_from_another_terminal(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    to_reject = _new_study(live_settings, tmp_path, "CLI-LATER", seeded)
    to_approve = _new_study(live_settings, tmp_path, "CLI-LATER", seeded)
    out = _ok(_cli(settings, "process", "--pending", "--query", _query(to_reject), answers=None))
    assert "stays pending" in out and "approvals approve" in out
    with AgentRuntime(settings) as runtime:
        pending = {p.request.imaging_study_id: p for p in runtime.pending_approvals()}
    assert set(pending) == {to_reject.imaging_study_id, to_approve.imaging_study_id}
    for study in (to_reject, to_approve):
        assert_nothing_written(settings, study)

    listing = _ok(_cli(settings, "approvals", "list"))
    assert "2 pending" in listing
    for study in (to_reject, to_approve):
        assert pending[study.imaging_study_id].interrupt_id in listing
        assert study.imaging_study_id in listing
    assert "CLI-LATER" in listing

    approval_id = pending[to_reject.imaging_study_id].interrupt_id
    # Ids are matched whole: a short prefix that only this approval has no longer picks it (issue 10).
    other = pending[to_approve.imaging_study_id].interrupt_id
    unique_prefix = next(approval_id[:n] for n in range(1, len(approval_id)) if not other.startswith(approval_id[:n]))
    guessed = _cli(settings, "approvals", "approve", unique_prefix)
    assert guessed.returncode == 1 and "matched whole" in guessed.stdout
    # An OS account not listed as a radiologist decides nothing.
    unlisted = _cli(settings, "approvals", "approve", approval_id, radiologists=["dr-fake"])
    assert unlisted.returncode == 2 and "not listed as a radiologist" in unlisted.stdout
    assert_nothing_written(settings, to_reject)

    shown = _ok(_cli(settings, "approvals", "show", approval_id))
    assert "CLI-LATER" in shown and "Right lung" in shown and "mL" in shown
    assert all(kind in shown for kind in ("RTSTRUCT", "SEG", "SR", "DiagnosticReport", "ImagingStudy"))
    unknown = _cli(settings, "approvals", "show", "zzzz")
    assert unknown.returncode == 1 and "zzzz" in unknown.stdout

    _ok(_cli(settings, "approvals", "reject", approval_id, "--reason", "contour misses the left base"))
    task = task_of(settings, to_reject)
    assert task.status == "rejected" and task.statusReason.text == "contour misses the left base"
    assert_nothing_written(settings, to_reject)

    approved = _ok(_cli(settings, "approvals", "approve", to_approve.imaging_study_id))
    assert "completed" in approved
    written = assert_written_once(settings, to_approve)
    assert _verifier_type(written)[0] == "verifier"
    assert "0 pending" in _ok(_cli(settings, "approvals", "list"))


def test_process_pending_yes_records_that_nobody_reviewed(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _new_study(live_settings, tmp_path, "CLI-YES", seeded)
    out = _ok(_cli(settings, "process", "--pending", "--yes", "--query", _query(study), answers=None))
    assert "approved automatically" in out and "completed" in out
    written = assert_written_once(settings, study)
    kind, _person = _verifier_type(written)
    assert kind == "enterer"
    assert written.provenance.reason and "no human reviewed" in written.provenance.reason[0].text
    assert not written.report.resultsInterpreter
    assert any("AUTOMATICALLY" in (n.text or "") for n in written.task.note or [])


def test_process_study_after_an_unanswered_job_still_processes_that_study(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    """`process` resumes earlier unfinished jobs first, and then does what it was asked."""
    earlier = _new_study(live_settings, tmp_path, "CLI-ORDER", seeded)
    asked = _new_study(live_settings, tmp_path, "CLI-ORDER", seeded)
    _ok(_cli(settings, "process", "--study", earlier.imaging_study_id, answers=None))
    out = _ok(_cli(settings, "process", "--study", asked.imaging_study_id, answers="y\ny\n"))
    assert "Resuming job" in out
    assert_written_once(settings, earlier)
    assert_written_once(settings, asked)
