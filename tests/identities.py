"""Authenticated principals and their decisions for tests: decisions are only ever made by one."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from tools.identity.principal import Principal, Role
from tools.workflow.approval import ApprovalDecision

TEST_ISSUER = "urn:imaging-agent:test-issuer"


def principal(
    id: str = "dr-lee",
    name: str = "Dr. Lee",
    roles: Iterable[Role] = ("radiologist",),
    *,
    auth_time: datetime | None = None,
    auth_method: str = "password",
) -> Principal:
    return Principal(
        id=id,
        display_name=name,
        issuer=TEST_ISSUER,
        roles=frozenset(roles),
        auth_time=auth_time or datetime.now(UTC),
        auth_method=auth_method,
    )


def signed_decision(
    action: str,
    reviewer_id: str = "dr-lee",
    reviewer_name: str = "Dr. Lee",
    reason: str | None = None,
    automatic: bool = False,
) -> ApprovalDecision:
    """The decision of a freshly signed-in radiologist with this id and name."""
    return ApprovalDecision.by(principal(reviewer_id, reviewer_name), action, reason, automatic=automatic)
