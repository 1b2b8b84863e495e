"""OpenID Connect for API clients: discovery, the provider's keys, and bearer JWT validation.

A hospital's identity provider (Keycloak, Entra ID, ...) signs access tokens; an API client
sends one as `Authorization: Bearer ...` and `OidcVerifier.principal` turns it into the
`Principal` that signs decisions: id = `sub`, issuer = the provider's issuer (the identifier
system of the Practitioner), roles from a configured claim. Only the provider's own issuer,
the configured audience, an unexpired token and a signature by one of the provider's current
keys are accepted. The browser's login (code + PKCE) lives in `agent/api/oidc_routes.py`; it
builds its principal from the ID token's claims with `principal_from_claims` below.

JOSE is joserfc (Authlib's own JOSE library); HTTP is httpx. Plain Python: no web framework.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError
from joserfc.jwk import KeySet
from pydantic import BaseModel, Field, ValidationError

from tools.identity.principal import ROLES, Principal

# Asymmetric algorithms only: a shared-secret (HS*) token could be forged by anyone who knows the
# client secret, and "none" is never a signature.
SIGNING_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
KEY_REFRESH_MIN_S = 30.0
"""An unknown key id fetches the JWKS again (the provider rotated its keys), at most this often."""


class OidcConfig(BaseModel):
    """What the top (agent/settings.py) hands down: the provider and how to read its tokens."""

    issuer: str = Field(min_length=1, description="exactly as the provider's discovery document says it")
    audience: str = Field(min_length=1, description="the `aud` an access token for this service carries")
    roles_claim: str = Field(default="roles", min_length=1, description="claim holding the roles; dots for nesting")
    leeway_s: int = Field(default=30, ge=0, description="clock skew allowed on exp / nbf / iat")
    jwks_cache_s: float = Field(default=300.0, gt=0, description="how long fetched keys are trusted before refetching")
    timeout_s: float = Field(default=10.0, gt=0)


class OidcMetadata(BaseModel):
    """The parts of the provider's discovery document the agent uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None = None


class OidcError(PermissionError):
    """A token or the provider was refused; the message says what was wrong and what to do."""


def discover(issuer: str, http: httpx.Client) -> OidcMetadata:
    """The provider's discovery document; its `issuer` must be exactly the configured one (OIDC Discovery 4.3)."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = http.get(url)
        response.raise_for_status()
        metadata = OidcMetadata.model_validate(response.json())
    except (httpx.HTTPError, ValueError, ValidationError) as exc:
        raise OidcError(
            f"the OpenID provider's discovery document {url} could not be read ({exc}); check "
            "IMAGING_AGENT_OIDC_ISSUER and that the provider is reachable"
        ) from exc
    if metadata.issuer != issuer:
        raise OidcError(
            f"the OpenID provider at {url} calls itself {metadata.issuer!r}, not {issuer!r}: set "
            "IMAGING_AGENT_OIDC_ISSUER to exactly the provider's issuer"
        )
    return metadata


def roles_from_claims(claims: Mapping[str, Any], roles_claim: str) -> frozenset[str]:
    """The agent's roles named in `roles_claim` ("roles", or a dotted path such as "realm_access.roles").

    Values the agent does not know (other applications' roles) are ignored; a single string counts
    as one role."""
    value: Any = claims
    for part in roles_claim.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return frozenset()
    return frozenset(v for v in value if isinstance(v, str) and v in ROLES)


def principal_from_claims(claims: Mapping[str, Any], issuer: str, roles_claim: str) -> Principal:
    """The principal of validated claims (an access token's or an ID token's); OidcError without a role."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise OidcError(f"the token from {issuer} has no subject (`sub`); the provider must send one")
    roles = roles_from_claims(claims, roles_claim)
    if not roles:
        raise OidcError(
            f"{subject} at {issuer} holds none of the roles {', '.join(ROLES)} in the token's {roles_claim!r} "
            "claim: ask the identity provider's administrator to assign one (or set IMAGING_AGENT_OIDC_ROLES_CLAIM "
            "to the claim your provider uses)"
        )
    name = next((claims[k] for k in ("name", "preferred_username") if isinstance(claims.get(k), str) and claims[k]), subject)
    # auth_time (OIDC Core 2) is when the person last entered credentials: the signing window
    # counts from it. Without it, iat stands in; a token minted later from a refresh token then
    # looks fresher than the login was, so providers should send auth_time (README, OIDC).
    when = claims.get("auth_time", claims.get("iat"))
    if not isinstance(when, int | float):
        raise OidcError(f"the token of {subject} from {issuer} says neither auth_time nor iat; it cannot sign")
    return Principal(
        id=subject,
        display_name=name,
        issuer=issuer,
        roles=roles,  # type: ignore[arg-type]  # filtered to ROLES above
        auth_time=datetime.fromtimestamp(when, UTC),
        auth_method="oidc",
    )


class OidcVerifier:
    """Validates bearer access tokens of one provider, with its keys cached (thread-safe)."""

    def __init__(
        self, config: OidcConfig, http: httpx.Client | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self._http = http or httpx.Client(timeout=config.timeout_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._metadata: OidcMetadata | None = None
        self._keys: KeySet | None = None
        self._keys_fetched_at = float("-inf")

    @property
    def metadata(self) -> OidcMetadata:
        with self._lock:
            if self._metadata is None:
                self._metadata = discover(self.config.issuer, self._http)
            return self._metadata

    def principal(self, token: str) -> Principal:
        """The principal of a valid access token; OidcError saying why a token is refused."""
        return principal_from_claims(self.claims(token), self.config.issuer, self.config.roles_claim)

    def claims(self, token: str) -> dict[str, Any]:
        """The token's claims once signature, issuer, audience and lifetime are checked."""
        try:
            decoded = jwt.decode(token, self._key_set_for(token), algorithms=SIGNING_ALGORITHMS)
        except OidcError:
            raise
        except JoseError as exc:
            raise OidcError(f"the bearer token is not signed by {self.config.issuer} ({exc.error}): sign in again") from exc
        except ValueError as exc:
            raise OidcError(f"the bearer token is not a JWT ({exc}): send the access token from {self.config.issuer}") from exc
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=self.config.leeway_s,
            iss={"essential": True, "value": self.config.issuer},
            aud={"essential": True, "value": self.config.audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(decoded.claims)
        except ExpiredTokenError as exc:
            raise OidcError(f"the bearer token from {self.config.issuer} has expired: sign in again") from exc
        except (InvalidClaimError, MissingClaimError) as exc:
            claim = exc.claim if hasattr(exc, "claim") else "?"
            found = decoded.claims.get(claim)
            raise OidcError(
                f"the bearer token's {claim!r} is {found!r}, but this service accepts only tokens with issuer "
                f"{self.config.issuer!r} and audience {self.config.audience!r}: ask for a token for this service"
            ) from exc
        except JoseError as exc:
            raise OidcError(f"the bearer token from {self.config.issuer} was refused ({exc.error})") from exc
        return decoded.claims

    def _key_set_for(self, token: str) -> KeySet:
        """The cached keys, refetched when stale or when the token names a key id they lack."""
        kid = _header_kid(token)
        with self._lock:
            now = self._clock()
            stale = now - self._keys_fetched_at > self.config.jwks_cache_s
            unknown = self._keys is not None and kid is not None and not any(k.kid == kid for k in self._keys)
            if self._keys is None or stale or (unknown and now - self._keys_fetched_at > KEY_REFRESH_MIN_S):
                self._keys = self._fetch_keys()
                self._keys_fetched_at = now
            return self._keys

    def _fetch_keys(self) -> KeySet:
        metadata = self._metadata or discover(self.config.issuer, self._http)
        self._metadata = metadata
        try:
            response = self._http.get(metadata.jwks_uri)
            response.raise_for_status()
            return KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            raise OidcError(
                f"the keys of {self.config.issuer} could not be read from {metadata.jwks_uri} ({exc}); "
                "check that the provider is reachable"
            ) from exc


def unverified_issuer(token: str) -> str | None:
    """The `iss` a token claims, unchecked: only to choose which verifier checks it."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, IndexError):
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


def _header_kid(token: str) -> str | None:
    """The key id in the token's (not yet verified) header: it only chooses which key to try."""
    try:
        head = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, IndexError) as exc:
        raise OidcError("the bearer token is not a JWT: send the access token your identity provider issued") from exc
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None
