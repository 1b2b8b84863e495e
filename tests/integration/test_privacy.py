"""PHI at rest and in the logs: a private run directory, retention (`imaging-agent purge`),
free text withheld from the LLM on request, and no patient name in any log of a full run."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from agent.chat import build_chat_graph
from agent.runtime import AgentRuntime
from agent.settings import PROJECT_ROOT, Settings
from tests.conftest import pacs_env
from tests.integration.test_cli_workflow import REVIEWER
from tests.integration.workflow_helpers import SeededStudy, approve, phantom_spec, seed_phantom
from tests.scripted_model import ScriptedModel, tool_call

pytestmark = pytest.mark.integration

CLI = PROJECT_ROOT / ".venv" / "bin" / "imaging-agent"


def _study(live_settings: Settings, tmp_path: Path, seeded: list[SeededStudy], seed: int, **update: object) -> SeededStudy:
    study = seed_phantom(live_settings, tmp_path / f"phantom-{seed}", phantom_spec(seed, f"PRIV-{seed:04d}", **update))
    seeded.append(study)
    return study


def _cli(settings: Settings, *args: str, answers: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGING_AGENT_")}
    env.update(
        IMAGING_AGENT_RUN_DIR=str(settings.run_dir),
        IMAGING_AGENT_FHIR_URL=settings.fhir_url,
        IMAGING_AGENT_LOCAL_RADIOLOGISTS=json.dumps([REVIEWER]),
        COLUMNS="200",
        **pacs_env(settings),
    )
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(CLI), *args], input=answers, env=env, cwd=settings.run_dir, capture_output=True, text=True, timeout=300
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_dir_is_0700_and_every_file_the_agent_writes_is_0600(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    study = _study(live_settings, tmp_path, seeded, 701)
    permissive = os.umask(0o022)  # a usual login umask: files 0644 unless the agent says otherwise
    try:
        settings.run_dir.mkdir(mode=0o755)
        settings.run_dir.chmod(0o755)
        with AgentRuntime(settings) as runtime:
            report = runtime.start_study(study.imaging_study_id)
            [pending] = report.pending
            assert runtime.decide(report.thread_id, {pending.interrupt_id: approve()}).done
    finally:
        os.umask(permissive)
    written = [p for p in settings.run_dir.rglob("*")]
    assert any(p.suffix == ".dcm" for p in written) and any(p.name == "agent.sqlite" for p in written)
    assert _mode(settings.run_dir) == 0o700
    loose = {str(p): oct(_mode(p)) for p in written if _mode(p) != (0o700 if p.is_dir() else 0o600)}
    assert loose == {}, f"readable by others: {loose}"
    # The servers the suite started run under the same rule: their storage, databases and logs.
    services_dir = live_settings.run_dir
    assert _mode(services_dir) == 0o700
    service_files = [p for p in services_dir.rglob("*") if p.is_file()]
    assert any(p.name == "orthanc.log" for p in service_files) and any(p.name == "orthanc.json" for p in service_files)
    loose = {str(p): oct(_mode(p)) for p in service_files if _mode(p) & 0o077}
    assert loose == {}, f"service files readable by others: {loose}"


def _age(folder: Path, days: float) -> None:
    then = time.time() - days * 86400
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (then, then))


def test_purge_deletes_old_finished_work_and_keeps_a_pending_approvals(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    finished = _study(live_settings, tmp_path, seeded, 702)
    waiting = _study(live_settings, tmp_path, seeded, 703)
    with AgentRuntime(settings) as runtime:
        done = runtime.start_study(finished.imaging_study_id)
        runtime.decide(done.thread_id, {done.pending[0].interrupt_id: approve()})
        pending = runtime.start_study(waiting.imaging_study_id)
        [request] = pending.pending
    work = settings.run_dir / "work"
    pending_folder = Path(request.request.dicom_writes[0].path).relative_to(work).parts[0]
    folders = {p.name for p in work.iterdir()}
    [finished_folder] = folders - {pending_folder}
    recent = work / "recent-draft"
    recent.mkdir()
    (recent / "volume.npz").write_bytes(b"x")
    for name in folders:
        _age(work / name, days=30)

    dry = _cli(settings, "purge", "--older-than", "7", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"would delete {work / finished_folder}" in dry.stdout
    assert {p.name for p in work.iterdir()} == folders | {"recent-draft"}

    result = _cli(settings, "purge", "--older-than", "7")
    assert result.returncode == 0, result.stdout + result.stderr
    assert {p.name for p in work.iterdir()} == {pending_folder, "recent-draft"}
    assert "an unfinished job" in result.stdout and pending_folder in result.stdout
    # The pending approval still has every file it shows and writes: approving it completes the study.
    with AgentRuntime(settings) as runtime:
        final = runtime.decide(pending.thread_id, {request.interrupt_id: approve()})
    assert final.done and final.outcomes[0]["outcome"] == "completed"

    without_days = _cli(settings, "purge")
    assert without_days.returncode == 2 and "IMAGING_AGENT_RETENTION_DAYS" in without_days.stdout


@pytest.mark.parametrize("free_text", [True, False])
def test_free_text_is_withheld_from_the_llm_when_asked(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path, free_text: bool
) -> None:
    description = f"CT CHEST for Quokka-{704 + free_text} Harrow, ward 7"
    study = _study(live_settings, tmp_path, seeded, 704 + free_text, study_description=description)
    model = ScriptedModel(
        script=[
            AIMessage("", tool_calls=[tool_call("show_study", imaging_study_id=study.imaging_study_id)]),
            AIMessage("", tool_calls=[tool_call("search_imaging_studies", patient_identifier=f"PRIV-{704 + free_text:04d}")]),
        ]
    )
    with AgentRuntime(settings.model_copy(update={"llm_free_text": free_text})) as runtime:
        chat = build_chat_graph(runtime, model)
        config = {"configurable": {"thread_id": f"free-text-{free_text}"}}
        chat.invoke({"messages": [HumanMessage(f"show study {study.imaging_study_id}")]}, config)
        messages = chat.get_state(config).values["messages"]
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert [m.name for m in results] == ["show_study", "search_imaging_studies"]
    seen_by_model = "\n".join(str(m.content) for call in model.seen for m in call)
    if free_text:
        assert description in results[0].content and description in seen_by_model
    else:
        assert all(description not in str(m.content) for m in results)
        assert description not in seen_by_model and "Quokka" not in seen_by_model
        assert '"untrusted_text":null' in results[0].content.replace(" ", "")


def test_no_log_of_a_full_run_names_the_patient(
    settings: Settings, live_settings: Settings, seeded: list[SeededStudy], tmp_path: Path
) -> None:
    name = "Quillfeather^Zenobia"
    study = _study(live_settings, tmp_path, seeded, 706, patient_name=name)
    run = _cli(settings, "--verbose", "process", "--study", study.imaging_study_id, answers="y\n")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "completed" in run.stdout
    assert "INFO" in run.stderr, "the verbose run logged nothing: the scan would prove nothing"
    logs = {"the run's log output (stderr)": run.stderr}
    for root in (settings.run_dir, live_settings.run_dir):
        for path in root.rglob("*.log"):
            logs[str(path)] = path.read_text(errors="replace")
    assert any(p.endswith("orthanc.log") for p in logs) and any(p.endswith("fhir.log") for p in logs)
    for part in ("Quillfeather", "Zenobia"):
        named = [where for where, text in logs.items() if part.lower() in text.lower()]
        assert named == [], f"the patient's name appears in {named}"
