"""What `--yes` covers: the invoking command's own jobs and, for `ask`, the studies its goal names."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.auto_approval import AutoApprovalScope, ids_named_in
from graphs.runtime import PendingApproval
from tests.unit.test_app import sample_card
from tools.workflow.approval import ApprovalRequest

pytestmark = pytest.mark.unit


def pending(tmp_path: Path, job: str, study: str = "study-42", approval: str = "a1") -> PendingApproval:
    card = sample_card(tmp_path / "axial_1.png")
    card.pop("job"), card.pop("approval_id")
    card["imaging_study_id"] = study
    return PendingApproval(thread_id=job, interrupt_id=approval, request=ApprovalRequest.model_validate(card))


def test_process_yes_covers_only_the_jobs_it_started(tmp_path: Path) -> None:
    mine, theirs = pending(tmp_path, "batch-mine"), pending(tmp_path, "batch-theirs", study="study-7")
    scope = AutoApprovalScope(enabled=True, own_jobs={"batch-mine"})
    assert scope.refusal(mine, [mine, theirs]) is None
    assert scope.refusal(theirs, [mine, theirs]) == "job batch-theirs was not started by this command"
    assert AutoApprovalScope(enabled=False, own_jobs={"batch-mine"}).refusal(mine, [mine]) == "--yes was not given"


def test_yes_never_covers_a_study_that_waits_in_another_job(tmp_path: Path) -> None:
    mine, earlier = pending(tmp_path, "study-mine"), pending(tmp_path, "batch-earlier", approval="a0")
    scope = AutoApprovalScope(enabled=True, own_jobs={"study-mine"})
    assert scope.refusal(mine, [earlier, mine]) == "ImagingStudy/study-42 also waits for a decision in job batch-earlier"


def test_ask_yes_covers_only_studies_the_goal_names(tmp_path: Path) -> None:
    named, other = pending(tmp_path, "batch-1", study="ct-001"), pending(tmp_path, "batch-1", study="ct-002", approval="a2")
    scope = AutoApprovalScope(enabled=True, own_jobs={"batch-1"}, named_studies=ids_named_in("process study ct-001 now"))
    assert scope.refusal(named, [named, other]) is None
    assert scope.refusal(other, [named, other]) == "the goal does not name ImagingStudy/ct-002"
    everything = AutoApprovalScope(
        enabled=True, own_jobs={"batch-1"}, named_studies=ids_named_in("analyze all pending CT scans and store RTSTRUCT")
    )
    assert everything.refusal(named, [named]) == "the goal does not name ImagingStudy/ct-001"
    by_uid = AutoApprovalScope(enabled=True, own_jobs={"batch-1"}, named_studies=ids_named_in("contour study 1.2.3.4"))
    assert by_uid.refusal(named, [named]) is None, "the Study Instance UID names the study too"


def test_ids_in_a_goal_are_whole_words() -> None:
    assert ids_named_in("process ImagingStudy/ct-001, then 1.2.3.4.") >= {"ct-001", "1.2.3.4", "ImagingStudy"}
    assert "ct-00" not in ids_named_in("process study ct-001")
