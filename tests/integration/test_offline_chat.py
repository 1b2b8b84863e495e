"""The default product path: the offline planner in the real chat graph, the user's example goal."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from agent.chat import build_chat_graph
from agent.llm import build_chat_model, planner_info
from agent.parts import fhir_client
from agent.planner.chat_model import OfflinePlanner
from agent.runtime import AgentRuntime
from agent.seed import seed_datasets
from agent.settings import Settings
from graphs.chat import answer
from tests.identities import signed_decision
from tests.integration.listings import result_series
from tools.imaging.volume import read_series_dir
from tools.phantom import PhantomSpec, make_phantom, write_phantom

pytestmark = pytest.mark.integration

GOAL = "analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS"


def test_example_goal_with_the_offline_planner(live_settings: Settings, tmp_path: Path) -> None:
    spec = PhantomSpec(
        slices=60, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0, seed=501, patient_id="OFF-0501"
    )
    write_phantom(make_phantom(spec), tmp_path / "dicom")
    [seeded] = seed_datasets(live_settings, read_series_dir(tmp_path / "dicom"))
    settings = live_settings.model_copy(update={"run_dir": tmp_path / "run", "llm_provider": "auto"})
    assert isinstance(build_chat_model(settings), OfflinePlanner)
    assert planner_info(settings).kind == "offline"

    with AgentRuntime(settings) as runtime:
        chat = build_chat_graph(runtime)
        config = {"configurable": {"thread_id": "offline-goal"}}
        chat.invoke({"messages": [HumanMessage(GOAL)]}, config)
        seen: set[str] = set()
        # The work list is shared with other tests: approve our study, reject any other one.
        for _ in range(20):
            interrupts = chat.get_state(config).interrupts
            if not interrupts:
                break
            card = interrupts[0].value
            seen.add(card["imaging_study_id"])
            if card["imaging_study_id"] == seeded.imaging_study_id:
                chat.invoke(answer(card["approval_id"], signed_decision("approve", "dr-offline", "Dr. Offline")), config)
            else:
                chat.invoke(answer(card["approval_id"], signed_decision("reject", "dr-offline", "Dr. Offline", "not this test's study")), config)
        final = chat.get_state(config).values["messages"][-1].content

    assert seeded.imaging_study_id in seen
    assert f"ImagingStudy/{seeded.imaging_study_id}: completed" in final
    assert sorted(result_series(live_settings, seeded.study_instance_uid)) == ["RTSTRUCT", "SEG", "SR"]
    with fhir_client(live_settings) as fhir:
        assert fhir.read("ImagingStudy", seeded.imaging_study_id).status == "available"
