"""Review claims (tools/workflow/claims.py): one active claim per pending approval, taken atomically,
ended by release, expiry or the decision, on SQLite and PostgreSQL.

Time is a clock the test moves (expiry is a comparison of times, not a wait); races are real
threads, each store on its own pooled connection, as in the lease tests."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine

from tools.workflow.claims import Claim, ClaimHeldError, ClaimHolder, ClaimStore, utc_text

pytestmark = pytest.mark.unit

JOB, RESULT = "study-20260101-000000-abcdef", "1.2.826.0.1.3680043.8.498.1"
SUBJECT = "ImagingStudy/ct-007 (approval abc)"
CLAIM_S = 900.0
ANNE = ClaimHolder(id="dr-anne", issuer="urn:imaging-agent:local", name="Dr. Anne")
BORIS = ClaimHolder(id="dr-boris", issuer="urn:imaging-agent:local", name="Dr. Boris")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def _store(db: Engine, clock: Clock) -> ClaimStore:
    return ClaimStore(db, claim_s=CLAIM_S, clock=clock)


def test_a_claim_is_seen_by_the_others_and_refuses_them(state_engine: Engine, clock: Clock) -> None:
    store = _store(state_engine, clock)
    store.note_waiting(JOB, RESULT)
    mine = store.claim(JOB, RESULT, ANNE, SUBJECT)
    assert mine.holder == ANNE and (mine.expires_at - mine.claimed_at).total_seconds() == CLAIM_S
    [row] = store.waiting().values()
    assert row.claim == mine

    with pytest.raises(ClaimHeldError) as refused:
        store.claim(JOB, RESULT, BORIS, SUBJECT, refused="Nothing was decided")
    assert str(refused.value) == (
        f"Nothing was decided: {SUBJECT} is claimed by Dr. Anne (dr-anne, urn:imaging-agent:local) until "
        f"{utc_text(mine.expires_at)}. Ask them to release it, or try again after the claim expires."
    )
    with pytest.raises(ClaimHeldError, match="^Not released: "):
        store.release(JOB, RESULT, BORIS, SUBJECT)
    assert store.active(JOB, RESULT) == mine

    clock.now += 60
    renewed = store.claim(JOB, RESULT, ANNE, SUBJECT)  # the holder may claim again: it renews
    assert renewed.expires_at > mine.expires_at

    assert store.release(JOB, RESULT, ANNE, SUBJECT) is True
    assert store.active(JOB, RESULT) is None
    assert store.release(JOB, RESULT, ANNE, SUBJECT) is False  # nothing held: nothing to release
    assert store.claim(JOB, RESULT, BORIS, SUBJECT).holder == BORIS


def test_an_expired_claim_is_nobodys(state_engine: Engine, clock: Clock) -> None:
    store = _store(state_engine, clock)
    store.claim(JOB, RESULT, ANNE, SUBJECT)  # no waiting row yet: the claim makes it
    clock.now += CLAIM_S - 1
    with pytest.raises(ClaimHeldError):
        store.claim(JOB, RESULT, BORIS, SUBJECT)
    clock.now += 1
    assert store.active(JOB, RESULT) is None
    assert store.waiting()[(JOB, RESULT)].claim is None
    assert store.claim(JOB, RESULT, BORIS, SUBJECT).holder == BORIS


def test_waiting_counts_from_the_first_note_and_ends_with_the_decision(state_engine: Engine, clock: Clock) -> None:
    store = _store(state_engine, clock)
    store.note_waiting(JOB, RESULT)
    first = store.waiting()[(JOB, RESULT)].waiting_since
    clock.now += 300
    store.note_waiting(JOB, RESULT)  # the job resumed and stopped again at the same approval
    store.claim(JOB, RESULT, ANNE, SUBJECT)
    assert store.waiting()[(JOB, RESULT)].waiting_since == first

    store.finish(JOB, RESULT)
    assert store.waiting() == {} and store.active(JOB, RESULT) is None


def test_a_claim_must_last_a_positive_time(state_engine: Engine) -> None:
    with pytest.raises(ValueError, match="positive"):
        ClaimStore(state_engine, claim_s=0)


def _race(stores: list[ClaimStore]) -> tuple[list[Claim], int]:
    """Every store claims the approval for its own reviewer at the same moment; (claims won, refusals)."""
    start = threading.Barrier(len(stores))
    won: list[Claim] = []
    refused: list[int] = []

    def race(index: int, store: ClaimStore) -> None:
        holder = ClaimHolder(id=f"dr-{index}", issuer="urn:imaging-agent:local", name=f"Dr. {index}")
        start.wait()
        try:
            won.append(store.claim(JOB, RESULT, holder, SUBJECT))
        except ClaimHeldError:
            refused.append(1)

    threads = [threading.Thread(target=race, args=(i, store)) for i, store in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, len(refused)


@pytest.mark.parametrize("situation", ["no row yet", "waiting, unclaimed", "claim expired"])
def test_claiming_is_atomic(state_engine: Engine, clock: Clock, situation: str) -> None:
    """Eight reviewers claim the same approval at once: exactly one holds it, the seven others are
    refused naming that one. Whether the row must be inserted, or updated (free, or an expired claim)."""
    if situation != "no row yet":
        _store(state_engine, clock).note_waiting(JOB, RESULT)
    if situation == "claim expired":
        _store(state_engine, clock).claim(JOB, RESULT, ANNE, SUBJECT)
        clock.now += CLAIM_S
    won, refused = _race([_store(state_engine, clock) for _ in range(8)])
    assert len(won) == 1 and refused == 7
    assert _store(state_engine, clock).active(JOB, RESULT) == won[0]
