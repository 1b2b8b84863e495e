"""A reviewer's answer as an `ApprovalDecision`, with one readable message when it cannot be one.

The CLI (prompt, `approvals approve/reject`, `--yes`) and the app's approval cards all build
their decisions here. The rule itself (a reviewer id and name, a reason for every rejection)
stays in `ApprovalDecision`'s own validator (see docs/architecture.md, approval); this module
only turns pydantic's error list into a sentence a radiologist can act on.
"""

from __future__ import annotations

from pydantic import ValidationError

from tools.workflow.approval import ApprovalDecision

_REVIEWER_FIELDS = ("reviewer_id", "reviewer_name")
_NO_REVIEWER = (
    "a decision needs the reviewer's name and id: enter your name as reviewer "
    "(both are recorded in the FHIR Provenance and Task)"
)


class DecisionError(ValueError):
    """The answer cannot be recorded as a decision; the message says what is missing."""


def build_decision(
    action: str,
    reviewer_id: str,
    reviewer_name: str,
    reason: str | None = None,
    *,
    automatic: bool = False,
) -> ApprovalDecision:
    """The decision, checked by `ApprovalDecision`; raises `DecisionError` naming what is missing.

    Text is trimmed first, as a person types it: a blank name or reason counts as none.
    """
    try:
        return ApprovalDecision(
            action=action,  # type: ignore[arg-type]  # the validator names a wrong action
            reviewer_id=reviewer_id.strip(),
            reviewer_name=reviewer_name.strip(),
            reason=(reason or "").strip() or None,
            automatic=automatic,
        )
    except ValidationError as exc:
        raise DecisionError(readable_decision_error(exc)) from exc


def readable_decision_error(exc: ValidationError) -> str:
    """One message for every problem found, each said once, ending with what did not happen."""
    sentences: list[str] = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        if field in _REVIEWER_FIELDS:
            sentence = _NO_REVIEWER
        elif error["type"] == "value_error":
            # The model validator's own words (pydantic prefixes them with "Value error, ").
            sentence = str(error.get("ctx", {}).get("error", error["msg"]))
        else:
            sentence = f"{field}: {error['msg']}" if field else error["msg"]
        sentence = sentence[:1].upper() + sentence[1:]
        if sentence not in sentences:
            sentences.append(sentence)
    return " ".join(f"{s.rstrip('.')}." for s in sentences) + " Nothing was decided."
