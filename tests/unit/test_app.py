"""The Gradio app without services: it builds, serves its config, and renders approval cards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from gradio.routes import App
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from agent.review import DecisionError
from agent.runtime import AgentRuntime
from agent.settings import Settings
from agent.ui.cards import card_updates, form_decision, nobody
from agent.ui.layout import build_app
from agent.ui.markdown import (
    card_findings_markdown,
    card_summary_markdown,
    card_writes_markdown,
    jobs_markdown,
    planner_markdown,
    readable_error,
)
from agent.ui.services_check import check_services, services_markdown
from agent.ui.session import LockedGraphs
from agent.ui.transcript import Transcript
from graphs.runtime import Job, RunReport
from tests.conftest import make_service_settings
from tests.identities import principal
from tests.rendered_markdown import rendered_text
from tests.scripted_model import ScriptedModel, tool_call
from tools.results.fhir_report import FhirChange
from tools.review.edits import BrushStroke, EraseRange
from tools.segmentation.base import QAFlag
from tools.workflow.approval import (
    ApprovalDecision,
    ApprovalRequest,
    PendingDicomWrite,
    SeriesChoice,
    StructureForReview,
)

pytestmark = pytest.mark.unit

RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    """Free ports with nothing listening: PACS and FHIR are down."""
    return make_service_settings(tmp_path / "run").model_copy(update={"llm_provider": "offline"})


@pytest.fixture()
def runtime(settings: Settings) -> Iterator[AgentRuntime]:
    with AgentRuntime(settings) as rt:
        yield rt


def sample_card(preview: Path) -> dict[str, Any]:
    request = ApprovalRequest(
        request_id="1.2.3.999",
        imaging_study_id="study-42",
        study_instance_uid="1.2.3.4",
        patient_id="MRN-7",
        patient_display_name="Doe^Jane",
        study_date="2024-01-01",
        study_description="CT CHEST | low dose",
        series=SeriesChoice(
            series_instance_uid="1.2.3.4.5", description="Chest 1mm", images=60, slice_thickness_mm=5.0,
            reason="CT, enough images",
        ),
        engine="lung-threshold",
        engine_version="1.0.0",
        structures=[
            StructureForReview(key="left-lung", display="Left lung", volume_ml=1834.04, mean_hu=-831.1,
                               n_components=1, confidence=1.0),
            StructureForReview(key="right-lung", display="Right lung", volume_ml=2122.8, mean_hu=-831.7,
                               n_components=2, confidence=0.9),
        ],
        flags=[QAFlag(code="touches-inferior-edge", severity="warning", structure="left-lung",
                      message="Left lung reaches the inferior edge")],
        previews=[str(preview)],
        report_text="AI LUNG CONTOURING REPORT\nConclusion: fine",
        dicom_writes=[
            PendingDicomWrite(kind="RTSTRUCT", sop_class_uid=RTSTRUCT_CLASS, sop_class_name="RT Structure Set Storage",
                              sop_instance_uid="1.2.3.4.6.1", series_instance_uid="1.2.3.4.6", sha256="ab" * 32,
                              size_bytes=1000, path="/tmp/x.dcm"),
        ],
        fhir_changes=[FhirChange(method="PUT", resource_type="ImagingStudy", target="ImagingStudy/study-42",
                                 summary="status registered -> available")],
    )
    return {"approval_id": "0123456789abcdef", "job": "batch-1", **request.model_dump(mode="json")}


@pytest.fixture()
def card(tmp_path: Path) -> dict[str, Any]:
    from PIL import Image

    preview = tmp_path / "axial_1.png"
    Image.new("RGB", (32, 32), "red").save(preview)
    return sample_card(preview)


def test_app_serves_config_with_chat_approvals_and_jobs(settings: Settings, runtime: AgentRuntime) -> None:
    demo = build_app(settings, runtime, ScriptedModel(script=[AIMessage("hello")]))
    response = TestClient(App.create_app(demo)).get("/config")
    assert response.status_code == 200
    components = response.json()["components"]
    by_id = {c["props"].get("elem_id"): c for c in components if c["props"].get("elem_id")}
    assert by_id["chatbot"]["type"] == "chatbot"
    assert by_id["goal"]["type"] == "textbox" and by_id["send"]["type"] == "button"
    for prefix in ("chat", "panel"):
        assert by_id[f"{prefix}-approve"]["props"]["value"] == "Approve and write"
        assert by_id[f"{prefix}-reject"]["props"]["value"] == "Reject"
        assert by_id[f"{prefix}-card-previews"]["type"] == "gallery"
        # No reviewer textbox: the reviewer is the signed-in principal, never a typed name (issue 10).
        assert f"{prefix}-reviewer" not in by_id and by_id[f"{prefix}-reason"]["type"] == "textbox"
        assert "not signed in" in by_id[f"{prefix}-signed-in"]["props"]["value"]
    assert by_id["pending-list"]["type"] == "dropdown"
    tabs = [c["props"]["label"] for c in components if c["type"] == "tabitem"]
    assert tabs == ["Chat", "Approvals", "Jobs"]
    assert any(c["type"] == "timer" for c in components)
    planner = by_id["planner-status"]["props"]["value"]
    assert "Planner (offline)" in planner and "offline intent planner" in planner


def test_header_names_the_active_planner(settings: Settings) -> None:
    assert "offline intent planner" in planner_markdown(settings)
    openai = settings.model_copy(update={"llm_provider": "openai", "openai_base_url": "http://127.0.0.1:9/v1"})
    assert planner_markdown(openai).startswith("**Planner (openai)**")
    assert "http://127.0.0.1:9/v1" in planner_markdown(openai)


def test_services_down_are_reported_readably(settings: Settings) -> None:
    checks = check_services(settings)
    assert [(c.name, c.ok) for c in checks] == [("PACS", False), ("FHIR", False)]
    text = services_markdown(checks)
    assert settings.dicomweb_url in text and settings.fhir_url in text
    assert "imaging-agent services up" in text and "Traceback" not in text


def test_card_summary_names_patient_study_series_and_job(card: dict[str, Any]) -> None:
    text = card_summary_markdown(card)
    assert "ImagingStudy/study-42" in text
    assert "Doe^Jane" in text and "MRN-7" in text
    assert "CT CHEST \\| low dose" in text, "free text must not break the markdown"
    assert "`1.2.3.4.5`: 60 images, 5.0 mm" in text
    assert "lung-threshold 1.0.0" in text and "`0123456789abcdef`" in text and "`batch-1`" in text


def test_card_findings_table_and_flags(card: dict[str, Any]) -> None:
    text = card_findings_markdown(card)
    assert "| Left lung | 1834.0 | -831 | 1 | 1.00 |" in text
    assert "| Right lung | 2122.8 | -832 | 2 | 0.90 |" in text
    assert "⚠ **warning**: Left lung reaches the inferior edge" in text
    assert "Conclusion: fine" in text
    card["flags"] = []
    assert "#### QA flags\nNone." in card_findings_markdown(card)


def test_card_writes_list_every_dicom_object_and_fhir_change(card: dict[str, Any]) -> None:
    text = card_writes_markdown(card)
    assert (
        f"| RTSTRUCT | RT Structure Set Storage (`{RTSTRUCT_CLASS}`) | `1.2.3.4.6.1` | `{'ab' * 8}…` |"
    ) in text
    # The change text is shown literally, its ">" escaped: compare what the reader sees.
    assert "| PUT | ImagingStudy | ImagingStudy/study-42 | status registered -\\> available |" in text
    assert "status registered -> available" in rendered_text(text)
    assert text.index("PACS (STOW-RS)") < text.index("Pending writes: FHIR")


def test_card_updates_show_previews_as_images(card: dict[str, Any]) -> None:
    group, summary, previews, findings, writes, review_files = card_updates(card)
    assert group["visible"] is True
    assert review_files == card.get("review_files")  # the viewer opens the volume and masks it names
    assert summary.startswith("### Approval needed")
    assert [image.size for image in previews] == [(32, 32)]
    assert "Pending writes" in writes and "Volumes" in findings
    hidden = card_updates(None)
    assert hidden[0]["visible"] is False and hidden[2] is None and hidden[5] is None


def test_decisions_need_a_signed_in_principal_and_rejections_a_reason() -> None:
    # The app has no sign-in of its own: its cards refuse rather than trust a name from the page.
    assert nobody(None) is None
    with pytest.raises(DecisionError, match="sign in through `imaging-agent serve`|imaging-agent serve"):
        form_decision("approve", None, "", signing_window_s=600)
    with pytest.raises(DecisionError, match="A rejection needs a reason"):
        form_decision("reject", principal(), " ", signing_window_s=600)
    decision = form_decision("approve", principal("dr-ana-lee", "Dr. Ana Lee"), "", signing_window_s=600)
    assert (decision.action, decision.reviewer_id, decision.reviewer_name) == ("approve", "dr-ana-lee", "Dr. Ana Lee")
    rejection = form_decision("reject", principal(), "misses the base", signing_window_s=600)
    assert rejection.reason == "misses the base"


def test_saved_edits_are_a_modify_decision_and_never_ride_on_approve_or_reject() -> None:
    stroke = BrushStroke(structure="left-lung", mode="erase", plane="axial", index=3, points=[(1.5, 2.0)], radius_mm=4.0)
    erase = EraseRange(structure="right-lung", plane="coronal", first=2, last=5)
    edits = [stroke.model_dump(mode="json"), erase.model_dump(mode="json")]  # as the browser session holds them
    decision = form_decision("modify", principal("dr-ana-lee", "Dr. Ana Lee"), "", edits, signing_window_s=600)
    assert (decision.action, decision.edits, decision.reviewer_id) == ("modify", [stroke, erase], "dr-ana-lee")
    assert ApprovalDecision.model_validate_json(decision.model_dump_json()).edits == [stroke, erase]
    with pytest.raises(DecisionError, match="2 edits are not saved"):
        form_decision("approve", principal(), "", edits, signing_window_s=600)
    with pytest.raises(DecisionError, match="No edits to save"):
        form_decision("modify", principal(), "", [], signing_window_s=600)
    with pytest.raises(DecisionError, match="cannot be read"):
        form_decision("modify", principal(), "", [{"kind": "brush", "structure": "left-lung"}], signing_window_s=600)
    with pytest.raises(DecisionError, match="imaging-agent serve"):
        form_decision("modify", None, "", edits, signing_window_s=600)


def test_transcript_shows_tool_steps_progress_and_answer() -> None:
    call = tool_call("run_batch")
    transcript = Transcript([{"role": "user", "content": "go"}])
    transcript.apply("updates", {"planner": {"messages": [AIMessage("", tool_calls=[call])]}})
    assert transcript.messages[-1]["metadata"] == {"title": "Tool: run_batch", "id": call["id"], "status": "pending"}
    transcript.apply("custom", {"imaging_study_id": "s1", "stage": "segment", "percent": 40})
    transcript.apply("custom", {"imaging_study_id": "s1", "stage": "approval", "percent": 85})
    result = '{"job_thread_id": "batch-9", "kind": "batch", "pending_approvals": [{}], "outcomes": [], "done": false}'
    transcript.apply(
        "updates", {"tools": {"messages": [ToolMessage(result, tool_call_id=call["id"], name="run_batch")]}}
    )
    transcript.apply("updates", {"__interrupt__": ()})
    transcript.apply("updates", {"summarize": {"messages": [AIMessage("ImagingStudy/s1: completed")]}})
    transcript.finish()
    step, progress, answer = transcript.messages[1:]
    assert step["metadata"]["status"] == "done"
    assert "Started batch job `batch-9`: 1 approval(s) waiting" in step["content"]
    assert progress["metadata"]["title"] == "Progress: ImagingStudy/s1"
    assert "waiting for approval · 85%" in progress["content"]
    assert answer == {"role": "assistant", "content": "ImagingStudy/s1: completed"}


def test_tool_errors_and_unreachable_services_read_as_messages(settings: Settings, runtime: AgentRuntime) -> None:
    model = ScriptedModel(script=[AIMessage("", tool_calls=[tool_call("search_imaging_studies")])])
    graphs = LockedGraphs(runtime, model)
    transcript = Transcript([])
    events = list(graphs.stream_chat({"messages": [HumanMessage("list pending studies")]}, "unit-thread"))
    for event in events:
        assert event.kind in ("item", "card"), event
        if event.kind == "item":
            transcript.apply(*event.payload)
    assert events[-1].kind == "card" and events[-1].payload is None
    [step] = [m for m in transcript.messages if m.get("metadata", {}).get("title") == "Tool: search_imaging_studies"]
    # The message is shown literally (its URL escaped, not a link): compare what the reader sees.
    assert f"✗ FHIR server at {settings.fhir_url} did not answer" in rendered_text(step["content"])
    assert "Traceback" not in step["content"] and "Please fix your mistakes" not in step["content"]


def test_jobs_view_lists_outcomes_and_waiting_studies() -> None:
    jobs = [Job(thread_id="batch-1", kind="batch", label="status=registered&modality=CT",
                created_at="2026-01-02T03:04:05+00:00", status="done")]
    reports = {
        "batch-1": RunReport(
            thread_id="batch-1", kind="batch", done=True, pending=[],
            outcomes=[{"imaging_study_id": "s1", "study_instance_uid": None, "outcome": "completed",
                       "detail": "stored 3", "seconds": 4.5}],
        )
    }
    text = jobs_markdown(jobs, reports)
    assert "| `batch-1` | batch | status=registered&modality=CT | 2026-01-02 03:04:05 | done | 0 |" in text
    assert "| `batch-1` | s1 | **completed** | 4.5 | stored 3 |" in text
    assert "No jobs yet" in jobs_markdown([], {})


def test_readable_error_keeps_the_message() -> None:
    assert readable_error(KeyError("approval abc is no longer pending")).startswith("approval abc is no longer")
