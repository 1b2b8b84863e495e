"""A lung cancer study whose structure set (with the GTV) is in the PACS: the lungs leave the GTV out.

nsclc-lung1-001 (CT + the clinic's RTSTRUCT) is seeded as it is; the study job finds the
structure set in the study, takes the GTV out of both lungs and says so on the approval card.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from agent.runtime import AgentRuntime
from agent.seed import seed_datasets
from agent.settings import Settings
from tests.integration.workflow_helpers import SeededStudy, retire
from tools.imaging.volume import assemble_volume, read_series_dir
from tools.results.rtstruct import rtstruct_masks
from tools.segmentation.result_store import load_result

pytestmark = [pytest.mark.integration, pytest.mark.realdata]


def test_the_studys_gtv_is_left_out_of_the_lungs(settings: Settings, live_settings: Settings, shared_data: Path) -> None:
    case = shared_data / "nsclc-lung1-001"
    ct = read_series_dir(case / "dicom")
    rtstruct = pydicom.dcmread(case / "rtstruct.dcm")
    [seeded] = seed_datasets(live_settings, [*ct, rtstruct])
    study = SeededStudy(
        imaging_study_id=seeded.imaging_study_id, study_instance_uid=seeded.study_instance_uid,
        patient_reference=f"Patient/{seeded.patient_resource_id}",
    )
    try:
        with AgentRuntime(settings) as runtime:
            report = runtime.start_study(study.imaging_study_id)
            [pending] = report.pending
            [state] = [runtime.graphs["study"].get_state({"configurable": {"thread_id": report.thread_id}}).values]
        flags = [f for f in pending.request.flags if f.code == "region-excluded"]
        assert len(flags) == 1 and "GTV-1" in flags[0].message and rtstruct.SOPInstanceUID in flags[0].message
        result = load_result(state["segmentation"].path, state["segmentation"].sha256)
        gtv = rtstruct_masks(rtstruct, assemble_volume(ct))["GTV-1"]
        lungs = {s.structure.key: s.mask for s in result.structures}
        assert set(lungs) == {"left-lung", "right-lung"}
        assert all(not (mask & gtv).any() for mask in lungs.values())
        assert all(np.count_nonzero(mask) > 100_000 for mask in lungs.values())
        # The SR and SEG name the region left out among the algorithm's parameters.
        assert result.parameters["excluded_region"] == f"ROI 'GTV-1' of RTSTRUCT {rtstruct.SOPInstanceUID}"
    finally:
        retire(live_settings, [study])
