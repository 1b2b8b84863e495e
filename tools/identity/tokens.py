"""Access tokens of the API service: HS256 JWTs signed with a secret kept in the run directory.

A token carries the principal whole (sub, name, iss, roles, auth_time, amr), so the service
needs no session store; it expires after a short time, and `auth_time` (when the password was
last entered) is what the signing window of an approval is measured against.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from tools.identity.principal import Principal
from tools.secret_file import read_or_create

_ALGORITHM = "HS256"
AUDIENCE = "imaging-agent-api"


class InvalidTokenError(PermissionError):
    """No valid token: missing, forged, expired or malformed."""


def load_or_create_secret(path: Path) -> bytes:
    """The signing secret, made on first use; the file is readable by its owner only (0600)."""
    return read_or_create(path, lambda: secrets.token_bytes(32))


class TokenSigner:
    def __init__(self, secret: bytes, ttl_s: float) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(self, principal: Principal, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        claims = {
            "sub": principal.id,
            "name": principal.display_name,
            "iss": principal.issuer,
            "aud": AUDIENCE,
            "roles": sorted(principal.roles),
            "auth_time": int(principal.auth_time.timestamp()),
            "amr": [principal.auth_method],
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.ttl_s)).timestamp()),
        }
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                audience=AUDIENCE,
                options={"require": ["sub", "iss", "exp", "auth_time", "aud"]},
            )
            return Principal(
                id=claims["sub"],
                display_name=claims.get("name") or claims["sub"],
                issuer=claims["iss"],
                roles=frozenset(claims.get("roles", [])),
                auth_time=datetime.fromtimestamp(claims["auth_time"], UTC),
                auth_method=(claims.get("amr") or ["unknown"])[0],
            )
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise InvalidTokenError(f"the access token is not valid ({exc}): sign in again") from exc
