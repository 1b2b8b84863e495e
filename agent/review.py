"""A reviewer's answer as an `ApprovalDecision`, with one readable message when it cannot be one.

The CLI (prompt, `approvals approve/reject`, `--yes`), the API service and the app's approval
cards all build their decisions here, from an authenticated `Principal` only (never a typed
name). Deciding needs the radiologist role and, unless automatic, a recent sign-in. The rule
for the answer itself (a reason for every rejection) stays in `ApprovalDecision`'s own validator
(see docs/architecture.md, approval); this module turns pydantic's error list into a sentence a
radiologist can act on.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from tools.identity.principal import NotAllowedError, Principal, StaleAuthenticationError, require_fresh, require_role
from tools.review.edits import BrushStroke, EraseRange
from tools.workflow.approval import ApprovalDecision
from tools.workflow.claims import ClaimHolder


class DecisionError(ValueError):
    """The answer cannot be recorded as a decision; the message says what is missing."""


def build_decision(
    action: str,
    principal: Principal,
    reason: str | None = None,
    *,
    signing_window_s: float,
    automatic: bool = False,
    edits: Sequence[BrushStroke | EraseRange] = (),
    reason_code: str | None = None,
) -> ApprovalDecision:
    """The principal's decision; raises `DecisionError` naming what is missing or not allowed.

    `edits` (tools/review/edits.py) go with action "modify": the reviewer's corrected masks.

    A reason is trimmed first, as a person types it: a blank reason counts as none. `reason_code` is
    one of tools/workflow/rejection_reasons.py (a rejection's). An automatic approval (`--yes`)
    names its principal but signs nothing, so no fresh sign-in is asked."""
    try:
        require_role(principal, "radiologist", "decide approvals")
        if not automatic:
            require_fresh(principal, signing_window_s)
    except (NotAllowedError, StaleAuthenticationError) as exc:
        raise DecisionError(f"{str(exc).rstrip('.')}. Nothing was decided.") from exc
    try:
        return ApprovalDecision.by(
            principal,
            action,
            (reason or "").strip() or None,
            automatic=automatic,
            edits=edits,
            reason_code=reason_code or None,
        )
    except ValidationError as exc:
        raise DecisionError(readable_decision_error(exc)) from exc


def claim_holder(principal: Principal) -> ClaimHolder:
    """The principal as the holder of a review claim: only a radiologist, who may decide, may claim."""
    try:
        require_role(principal, "radiologist", "claim approvals")
    except NotAllowedError as exc:
        raise DecisionError(f"{str(exc).rstrip('.')}. Nothing was claimed.") from exc
    return ClaimHolder(id=principal.id, issuer=principal.issuer, name=principal.display_name)


def readable_decision_error(exc: ValidationError) -> str:
    """One message for every problem found, each said once, ending with what did not happen."""
    sentences: list[str] = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "value_error":
            # The model validator's own words (pydantic prefixes them with "Value error, ").
            sentence = str(error.get("ctx", {}).get("error", error["msg"]))
        else:
            sentence = f"{field}: {error['msg']}" if field else error["msg"]
        sentence = sentence[:1].upper() + sentence[1:]
        if sentence not in sentences:
            sentences.append(sentence)
    return " ".join(f"{s.rstrip('.')}." for s in sentences) + " Nothing was decided."
