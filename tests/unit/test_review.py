"""One decision check for the CLI, the API and the app: the principal may decide, and the answer is one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.review import DecisionError, build_decision, claim_holder
from tests.identities import TEST_ISSUER, principal

pytestmark = pytest.mark.unit

WINDOW = 600.0


def test_a_valid_answer_becomes_the_principals_decision() -> None:
    decision = build_decision("reject", principal("dr-lee", "Dr. Lee"), "  misses the base ", signing_window_s=WINDOW)
    assert (decision.action, decision.reviewer_id, decision.reason) == ("reject", "dr-lee", "misses the base")
    assert (decision.reviewer_name, decision.issuer, decision.auth_method) == ("Dr. Lee", TEST_ISSUER, "password")
    assert not decision.automatic
    auto = build_decision("approve", principal("ops", "Ops"), automatic=True, signing_window_s=WINDOW)
    assert auto.reviewer().reviewed is False and auto.auth_method == "automatic"


def test_a_rejection_without_reason_says_so_once() -> None:
    with pytest.raises(DecisionError) as info:
        build_decision("reject", principal(), "   ", signing_window_s=WINDOW)
    assert str(info.value) == "A rejection needs a reason: choose a reason code or say what is wrong with the contours. Nothing was decided."


def test_a_reason_code_is_a_rejections_reason_and_other_needs_words() -> None:
    coded = build_decision("reject", principal(), reason_code="contour-leak", signing_window_s=WINDOW)
    assert (coded.reason_code, coded.reason) == ("contour-leak", None)
    with pytest.raises(DecisionError, match="A rejection needs a reason"):
        build_decision("reject", principal(), reason_code="other", signing_window_s=WINDOW)
    assert build_decision("reject", principal(), "a clip artefact", reason_code="other", signing_window_s=WINDOW).reason
    with pytest.raises(DecisionError, match=r"A reason code \(missed-lung\) goes with a rejection only"):
        build_decision("approve", principal(), reason_code="missed-lung", signing_window_s=WINDOW)
    with pytest.raises(DecisionError, match="Reason_code: Input should be .wrong-series."):
        build_decision("reject", principal(), reason_code="looks-odd", signing_window_s=WINDOW)


def test_only_a_radiologist_claims() -> None:
    assert claim_holder(principal("dr-lee", "Dr. Lee")).name == "Dr. Lee"
    with pytest.raises(DecisionError, match="needs the radiologist role") as info:
        claim_holder(principal("op", "Operator", roles=("operator",)))
    assert str(info.value).endswith("Nothing was claimed.")


def test_only_a_radiologist_decides() -> None:
    with pytest.raises(DecisionError, match="needs the radiologist role") as info:
        build_decision("approve", principal("op", "Operator", roles=("operator",)), signing_window_s=WINDOW)
    assert str(info.value).endswith("Nothing was decided.")


def test_a_stale_sign_in_signs_nothing_but_an_automatic_approval_needs_none() -> None:
    old = principal(auth_time=datetime.now(UTC) - timedelta(seconds=WINDOW + 60))
    with pytest.raises(DecisionError, match="sign in again"):
        build_decision("approve", old, signing_window_s=WINDOW)
    assert build_decision("approve", old, automatic=True, signing_window_s=WINDOW).automatic


def test_an_unknown_action_names_the_field() -> None:
    with pytest.raises(DecisionError, match="Action: Input should be 'approve', 'reject' or 'modify'"):
        build_decision("maybe", principal(), signing_window_s=WINDOW)
