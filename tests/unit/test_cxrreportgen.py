"""CXRReportGen's adapter against the contract server: request shape, boxes back on the image, the
context's scrubbing, failures, and the draft's SR (dciodvfy)."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset

from tests.dicom_checks import dataset_errors
from tests.fake_cxrreportgen import FakeCxrReportGen
from tools.http import RetryPolicy
from tools.http.scoring import EndpointError, ScoringError
from tools.imaging.projection import read_projection
from tools.phantom import PhantomSpec, make_phantom
from tools.phantom.radiograph import Radiograph, make_radiograph
from tools.reporting.context import scrub, technique
from tools.reporting.cxrreportgen import Canvas, CxrReportGenDrafter, DraftError, parse_response
from tools.reporting.models import ReportContext
from tools.results.draft_sr import draft_sr_dataset

pytestmark = pytest.mark.unit

FAST_RETRY = RetryPolicy(attempts=3, backoff_s=0.0, max_backoff_s=2.0)
CONTEXT = ReportContext(indication="Cough.", technique="PA view of the chest.")


@pytest.fixture(scope="module")
def radiograph() -> Radiograph:
    spec = PhantomSpec(slices=60, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0, seed=4,
                       patient_id="MRN-CXR-55", patient_name="Report^Rosalind")
    return make_radiograph(make_phantom(spec))


def test_draft_boxes_land_on_the_heart_and_only_pixels_and_context_leave(radiograph: Radiograph) -> None:
    volume, _ = read_projection(radiograph.dataset)
    with FakeCxrReportGen() as fake:
        draft = CxrReportGenDrafter(fake.url, None, retry=FAST_RETRY).draft(volume, None, CONTEXT)
        assert fake.problems == []
        [body] = [r.body for r in fake.requests]
    heart = draft.findings[0]
    assert heart.text.startswith("The heart") and len(heart.boxes) == 1
    box = heart.boxes[0]
    rows, columns = np.nonzero(radiograph.heart)
    assert abs(box.column_min - columns.min()) <= 3 and abs(box.column_max - columns.max()) <= 3
    assert box.row_min >= rows.min() - 12 and box.row_max <= rows.max() + 3
    assert draft.findings[2].boxes == ()
    assert draft.requests_sent == 1 and draft.bytes_sent == len(body)
    request = json.loads(body)
    assert request["params"] == {} and request["input_data"]["data"][0][2:] == ["Cough.", "PA view of the chest.", "None."]
    for text in ("Report", "Rosalind", "MRN-CXR-55", str(radiograph.dataset.StudyInstanceUID)):
        assert text.encode() not in body


def test_a_mirrored_image_gets_its_boxes_on_its_own_pixels(radiograph: Radiograph) -> None:
    flipped = copy.deepcopy(radiograph.dataset)
    flipped.PixelData = np.ascontiguousarray(radiograph.dataset.pixel_array[:, ::-1]).tobytes()
    flipped.PatientOrientation = ["R", "F"]
    with FakeCxrReportGen() as fake:
        draft = CxrReportGenDrafter(fake.url, None, retry=FAST_RETRY).draft(read_projection(flipped)[0], None, CONTEXT)
    box = draft.findings[0].boxes[0]
    _, columns = np.nonzero(radiograph.heart[:, ::-1])
    assert abs(box.column_min - columns.min()) <= 3 and abs(box.column_max - columns.max()) <= 3


def test_canvas_maps_boxes_through_padding_and_scale() -> None:
    canvas = Canvas((2000, 1000))  # scaled to 1024 high, 512 wide, 256 px of padding each side
    assert (canvas.side, canvas.height, canvas.width, canvas.left, canvas.top) == (1024, 1024, 512, 256, 0)
    assert canvas.to_shown([0.25, 0.0, 0.75, 1.0]) == (0, 0, 1999, 999)
    assert canvas.to_shown([0.0, 0.0, 0.2, 1.0]) is None  # wholly in the padding


def test_answers_off_contract_and_failures_are_refused(radiograph: Radiograph) -> None:
    for bad in ([], {"output": "[]"}, [{"output": "not json"}], [{"output": json.dumps([["x", [[0, 0, 2, 1]]]])}]):
        with pytest.raises(ScoringError):
            parse_response(bad)
    assert parse_response([{"output": json.dumps([["A.", None], ["B.", [[0.1, 0.2, 0.3, 0.4]]]])}]) == [
        ("A.", []), ("B.", [[0.1, 0.2, 0.3, 0.4]])
    ]
    volume, _ = read_projection(radiograph.dataset)
    with FakeCxrReportGen(failures=[(429, "0"), (500, None), (500, None)]) as fake:
        with pytest.raises(DraftError, match="after 3 tries"):
            CxrReportGenDrafter(fake.url, None, retry=FAST_RETRY).draft(volume, None, CONTEXT)
    with FakeCxrReportGen(key="secret") as fake:
        with pytest.raises(DraftError, match="IMAGING_AGENT_CXRREPORTGEN_KEY"):
            CxrReportGenDrafter(fake.url, "wrong", retry=FAST_RETRY).draft(volume, None, CONTEXT)
    with pytest.raises(EndpointError, match="plain http"):
        CxrReportGenDrafter("http://example.org/score", None)


def test_context_is_scrubbed_and_technique_comes_from_the_views() -> None:
    text = scrub("Rosalind REPORT, MRN-CXR-55, call 0123456789: fever", ["Report^Rosalind"], ["MRN-CXR-55"])
    assert text == "[removed] [removed], [removed], call [removed]: fever"
    assert len(scrub("x" * 1000, [], [])) == 300
    assert technique(["PA", "LL"]) == "PA view and lateral view of the chest."
    assert technique(["AP"]) == "AP view of the chest."


def _values(item: Dataset) -> list[object]:
    """Every Text Value and Graphic Type in the content tree, depth first."""
    found: list[object] = []
    for child in item.get("ContentSequence", []):
        found += [child.get(name) for name in ("TextValue", "GraphicType") if name in child]
        found += _values(child)
    return found


def test_draft_sr_is_valid_and_holds_the_boxes(radiograph: Radiograph, tmp_path: Path) -> None:
    volume, _ = read_projection(radiograph.dataset)
    with FakeCxrReportGen() as fake:
        draft = CxrReportGenDrafter(fake.url, None, retry=FAST_RETRY).draft(volume, None, CONTEXT)
    sr = draft_sr_dataset(radiograph.dataset, draft, created=datetime(2024, 1, 2, 3, 4, 5))
    assert dataset_errors(sr, tmp_path) == []
    values = _values(sr)
    assert [f.text for f in draft.findings] == [v for v in values if isinstance(v, str) and v.endswith(".")]
    assert values.count("POLYLINE") == sum(len(f.boxes) for f in draft.findings)
    again = draft_sr_dataset(radiograph.dataset, draft, created=datetime(2024, 1, 2, 3, 4, 5))
    assert again.SOPInstanceUID == sr.SOPInstanceUID
