"""Who reviews which pending approval: claims in the runtime's database (SQLite or PostgreSQL).

Two radiologists working the same worklist must not both read a study and then both decide it. So
a reviewer claims an approval first; the others see who holds it and until when, and a decision
by anyone else is refused (graphs/runtime.py `decide`, the one place every decision passes):

- one row per pending approval in `review_claims` (tools/state/schema.py), keyed like its decision
  (job and result UID, which stay the same however often the job is resumed), with the time it
  started waiting and the holder's principal (id, issuer, name), `claimed_at` and `expires_at`;
- taking a claim is one statement that only one reviewer can win on either database: the insert
  of the row (the primary key lets one through), or, when the row is there, an update whose
  condition is "nobody holds it, or the claim has expired, or it is already mine", so of two
  reviewers taking the same free approval at once only one update matches;
- a claim ends when its holder releases it, when it expires (`claim_s` after it was taken:
  IMAGING_AGENT_CLAIM_MINUTES), or when the decision is recorded (the row goes with it);
- deciding an approval nobody holds claims it on the way, so the first decision stands and the
  rule is the same for the CLI, the API, the app and Python.

See docs/architecture.md, "Review claims".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from tools.state.schema import review_claims


class ClaimHolder(BaseModel):
    """The reviewer holding a claim: an authenticated principal's id, issuer and display name."""

    id: str
    issuer: str
    name: str


class Claim(BaseModel):
    """An active claim on one pending approval."""

    thread_id: str
    request_id: str
    holder: ClaimHolder
    claimed_at: datetime
    expires_at: datetime

    def held_by(self, holder: ClaimHolder) -> bool:
        return (self.holder.id, self.holder.issuer) == (holder.id, holder.issuer)


class WaitingApproval(BaseModel):
    """A row of `review_claims`: since when the approval waits, and its active claim, if any."""

    thread_id: str
    request_id: str
    waiting_since: datetime
    claim: Claim | None


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def utc_text(moment: datetime) -> str:
    """A time as the messages and the CLI show it: to the second, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class ClaimHeldError(RuntimeError):
    """Another reviewer holds the approval's claim; the message names the study, the holder and until when."""

    def __init__(self, claim: Claim, subject: str, refused: str) -> None:
        holder = claim.holder
        super().__init__(
            f"{refused}: {subject} is claimed by {holder.name} ({holder.id}, {holder.issuer}) until "
            f"{utc_text(claim.expires_at)}. Ask them to release it, or try again after the claim expires."
        )
        self.claim = claim


class ClaimStore:
    """The `review_claims` table; `claim_s` is how long a claim lasts, `clock` the time in epoch seconds."""

    def __init__(self, engine: Engine, *, claim_s: float, clock: Callable[[], float] = time.time) -> None:
        if claim_s <= 0:
            raise ValueError(f"a claim must last a positive time, not {claim_s} s")
        self.engine = engine
        self.claim_s = claim_s
        self.clock = clock

    @staticmethod
    def _key(thread_id: str, request_id: str) -> Any:
        return and_(review_claims.c.thread_id == thread_id, review_claims.c.request_id == request_id)

    def note_waiting(self, thread_id: str, request_id: str) -> None:
        """Mark the approval as waiting from now, unless it is marked already (a resume keeps the first time)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(review_claims).values(thread_id=thread_id, request_id=request_id, waiting_since=self.clock())
                )
        except IntegrityError:
            pass

    def waiting(self) -> dict[tuple[str, str], WaitingApproval]:
        """Every row, by (job, result UID), with only claims that have not expired."""
        now = self.clock()
        with self.engine.connect() as conn:
            rows = conn.execute(select(review_claims)).mappings().all()
        return {(row["thread_id"], row["request_id"]): self._waiting(row, now) for row in rows}

    def active(self, thread_id: str, request_id: str) -> Claim | None:
        """The approval's claim, unless nobody holds it or it has expired."""
        with self.engine.connect() as conn:
            row = conn.execute(select(review_claims).where(self._key(thread_id, request_id))).mappings().first()
        return None if row is None else self._waiting(row, self.clock()).claim

    def claim(
        self, thread_id: str, request_id: str, holder: ClaimHolder, subject: str, refused: str = "Not claimed"
    ) -> Claim:
        """Take (or renew) the claim for `holder`; ClaimHeldError when another reviewer's claim is active.

        `subject` names the approval in the refusal (the ImagingStudy), `refused` says what did not happen."""
        while True:
            now = self.clock()
            held = {
                "holder_id": holder.id,
                "holder_issuer": holder.issuer,
                "holder_name": holder.name,
                "claimed_at": now,
                "expires_at": now + self.claim_s,
            }
            claim = Claim(
                thread_id=thread_id, request_id=request_id, holder=holder, claimed_at=_utc(now),
                expires_at=_utc(now + self.claim_s),
            )
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(review_claims).values(thread_id=thread_id, request_id=request_id, waiting_since=now, **held)
                    )
                return claim
            except IntegrityError:  # the approval has its row: take it only if nobody else holds it now
                pass
            free = or_(
                review_claims.c.holder_id.is_(None),
                review_claims.c.expires_at <= now,
                and_(review_claims.c.holder_id == holder.id, review_claims.c.holder_issuer == holder.issuer),
            )
            with self.engine.begin() as conn:
                if conn.execute(update(review_claims).where(self._key(thread_id, request_id), free).values(**held)).rowcount == 1:
                    return claim
            current = self.active(thread_id, request_id)
            if current is not None and not current.held_by(holder):
                raise ClaimHeldError(current, subject, refused)
            # Released, expired or decided between the two statements: judge the row anew.

    def release(self, thread_id: str, request_id: str, holder: ClaimHolder, subject: str) -> bool:
        """Give up `holder`'s claim: True when there was one, False when `holder` held none;
        ClaimHeldError when another reviewer's claim is active (only its holder, or its expiry, ends it)."""
        mine = and_(
            self._key(thread_id, request_id),
            review_claims.c.holder_id == holder.id,
            review_claims.c.holder_issuer == holder.issuer,
        )
        cleared = {"holder_id": None, "holder_issuer": None, "holder_name": None, "claimed_at": None, "expires_at": None}
        with self.engine.begin() as conn:
            if conn.execute(update(review_claims).where(mine).values(**cleared)).rowcount == 1:
                return True
        current = self.active(thread_id, request_id)
        if current is not None:
            raise ClaimHeldError(current, subject, "Not released")
        return False

    def finish(self, thread_id: str, request_id: str) -> None:
        """The approval is answered: it waits no more, and its claim ends."""
        with self.engine.begin() as conn:
            conn.execute(delete(review_claims).where(self._key(thread_id, request_id)))

    @staticmethod
    def _waiting(row: Any, now: float) -> WaitingApproval:
        claim = None
        if row["holder_id"] is not None and row["expires_at"] is not None and row["expires_at"] > now:
            claim = Claim(
                thread_id=row["thread_id"],
                request_id=row["request_id"],
                holder=ClaimHolder(id=row["holder_id"], issuer=row["holder_issuer"], name=row["holder_name"]),
                claimed_at=_utc(row["claimed_at"]),
                expires_at=_utc(row["expires_at"]),
            )
        return WaitingApproval(
            thread_id=row["thread_id"], request_id=row["request_id"], waiting_since=_utc(row["waiting_since"]), claim=claim
        )
