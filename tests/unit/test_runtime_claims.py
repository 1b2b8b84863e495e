"""Claims where decisions are accepted (graphs/runtime.py `decide`) and the worklist that shows them.

The fake workflow of the routing tests over a real decision store and a real database (SQLite and
PostgreSQL): two reviewers, one approval. The second sees the first's claim and cannot decide until
it is released; a decision on an unclaimed approval claims it on the way; a recorded decision ends
the claim and takes the approval off the worklist."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from graphs.approval_worklist import WorklistFilter, claim, release, worklist
from graphs.runtime import WorkflowRuntime
from tests.identities import TEST_ISSUER, signed_decision
from tests.unit.test_runtime_leases import LeasedFake
from tools.workflow.claims import ClaimHeldError, ClaimHolder
from tools.workflow.decisions import DecisionStore

pytestmark = pytest.mark.unit

ANNE = ClaimHolder(id="dr-anne", issuer=TEST_ISSUER, name="Dr. Anne")


@pytest.fixture()
def runtime(database: Engine) -> WorkflowRuntime:
    fake = LeasedFake(DecisionStore(database))
    with WorkflowRuntime(fake, engine=database, batch_concurrency=2) as runtime:  # type: ignore[arg-type]
        yield runtime


def test_the_second_reviewer_cannot_decide_what_the_first_claimed(runtime: WorkflowRuntime) -> None:
    [pending] = runtime.start_study("s-1").pending
    [entry] = worklist(runtime)
    assert entry.claim is None and entry.engine == "lung-threshold" and entry.modality == "CT"

    held = claim(runtime, pending, ANNE)
    [entry] = worklist(runtime)
    assert entry.claim == held  # everyone sees who holds it

    boris = signed_decision("reject", "dr-boris", "Dr. Boris", "contour leaks into the liver")
    with pytest.raises(ClaimHeldError) as refused:
        runtime.decide(pending.thread_id, {pending.interrupt_id: boris})
    message = str(refused.value)
    assert message.startswith(f"Nothing was decided: ImagingStudy/s-1 (approval {pending.interrupt_id}) is claimed by Dr. Anne (dr-anne, ")
    assert "until " in message and message.endswith("or try again after the claim expires.")
    assert [p.interrupt_id for p in runtime.pending_approvals()] == [pending.interrupt_id]  # nothing recorded
    with pytest.raises(ClaimHeldError, match="^Not released: ImagingStudy/s-1"):
        release(runtime, pending, ClaimHolder(id="dr-boris", issuer=TEST_ISSUER, name="Dr. Boris"))

    assert release(runtime, pending, ANNE) is True
    report = runtime.decide(pending.thread_id, {pending.interrupt_id: boris})
    assert [o["outcome"] for o in report.outcomes] == ["rejected"]
    assert worklist(runtime) == [] and runtime.claims.waiting() == {}  # the decision ended the claim


def test_the_holder_decides_and_an_unclaimed_approval_is_claimed_by_its_decision(runtime: WorkflowRuntime) -> None:
    anne = signed_decision("approve", "dr-anne", "Dr. Anne")
    [claimed] = runtime.start_study("s-1").pending
    claim(runtime, claimed, ANNE)
    assert runtime.decide(claimed.thread_id, {claimed.interrupt_id: anne}).done
    [unclaimed] = runtime.start_study("s-2").pending
    assert runtime.decide(unclaimed.thread_id, {unclaimed.interrupt_id: anne}).done
    assert runtime.claims.waiting() == {}


def test_the_worklist_is_longest_waiting_first_and_filters(runtime: WorkflowRuntime) -> None:
    first = runtime.start_study("s-1").pending[0]
    second = runtime.start_study("s-2").pending[0]
    assert [e.approval.interrupt_id for e in worklist(runtime)] == [first.interrupt_id, second.interrupt_id]
    assert worklist(runtime, WorklistFilter(engine="monai-bundle")) == []
    assert len(worklist(runtime, WorklistFilter(modality="ct", flag="none"))) == 2
    assert worklist(runtime, WorklistFilter(flag="any")) == []
    assert worklist(runtime, WorklistFilter(flag="volume-low")) == []
