"""The authenticated person behind a request or a decision, and the checks made on them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

Role = Literal["radiologist", "operator", "admin"]
ROLES: tuple[Role, ...] = ("radiologist", "operator", "admin")

LOCAL_ISSUER = "urn:imaging-agent:local-accounts"
"""The issuer of local accounts (`imaging-agent users`): the identifier system of their Practitioner."""

OS_ACCOUNT_ISSUER_PREFIX = "urn:imaging-agent:os-account:"
"""Followed by the host name: the issuer of an OS account deciding at a terminal without a service."""


class Principal(BaseModel):
    """An authenticated person: who, according to whom, with which roles, and how and when they signed in."""

    id: str = Field(min_length=1, description="stable id at the issuer (a user name, an OIDC `sub`)")
    display_name: str = Field(min_length=1)
    issuer: str = Field(min_length=1, description="who vouches for the id: the identifier system in FHIR")
    roles: frozenset[Role] = frozenset()
    auth_time: datetime = Field(description="when this person last proved who they are (password, OS login)")
    auth_method: str = Field(min_length=1, description="how: password, os-account, oidc, ...")

    def has_role(self, role: Role) -> bool:
        return role in self.roles


class NotAllowedError(PermissionError):
    """The principal is known but lacks the role for what was asked."""


class StaleAuthenticationError(PermissionError):
    """The principal signed in too long ago to sign an approval."""


def require_role(principal: Principal, role: Role, what: str) -> None:
    if not principal.has_role(role):
        held = ", ".join(sorted(principal.roles)) or "no role"
        raise NotAllowedError(f"{principal.id} ({held}) may not {what}: it needs the {role} role")


def require_fresh(principal: Principal, window_s: float, now: datetime | None = None) -> None:
    """Signing an approval needs a recent authentication (21 CFR Part 11 e-signature spirit)."""
    age = ((now or datetime.now(UTC)) - principal.auth_time).total_seconds()
    if age > window_s:
        raise StaleAuthenticationError(
            f"{principal.id} signed in {age:.0f} s ago; signing an approval needs a sign-in within the last "
            f"{window_s:.0f} s: sign in again (imaging-agent login, or POST /api/v1/auth/token)"
        )
