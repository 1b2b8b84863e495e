"""Browser sign-in with the hospital's OpenID provider.

`/login` sends the browser to the provider (authorization code + PKCE, Authlib's Starlette
client; `?fresh=1` forces a new password entry, for signing after the window has passed);
`/auth/callback` checks the ID token (signature, issuer, audience, nonce: Authlib) and turns
its claims into a `Principal` (roles from IMAGING_AGENT_OIDC_ROLES_CLAIM), kept in a session of
`agent/api/browser.py`; `/logout` ends it here and at the provider.

API clients do not use these routes: they send the provider's access token as a bearer JWT,
checked by `tools.identity.oidc.OidcVerifier` (`bearer_verifier` builds it from the settings).
"""

from __future__ import annotations

import logging
from typing import Any

from authlib.integrations.starlette_client import OAuth, OAuthError
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from agent.api.browser import SESSION_COOKIE, LoginSessions, local_path, refusal
from agent.settings import Settings
from tools.identity.oidc import OidcConfig, OidcError, OidcVerifier, principal_from_claims

log = logging.getLogger(__name__)


class OidcNotConfigured(ValueError):
    """OpenID Connect settings are missing; the message names them."""


def oidc_config(settings: Settings) -> OidcConfig:
    """The provider as the bearer-token check needs it; OidcNotConfigured when the settings lack it."""
    if not settings.oidc_issuer or not settings.oidc_client_id:
        raise OidcNotConfigured(
            "OpenID Connect needs IMAGING_AGENT_OIDC_ISSUER and IMAGING_AGENT_OIDC_CLIENT_ID (see .env.example)"
        )
    return OidcConfig(
        issuer=settings.oidc_issuer,
        audience=settings.oidc_audience or settings.oidc_client_id,
        roles_claim=settings.oidc_roles_claim,
        timeout_s=settings.http_timeout_s,
    )


def bearer_verifier(settings: Settings) -> OidcVerifier:
    """Checks API clients' bearer JWTs against the provider's keys."""
    return OidcVerifier(oidc_config(settings))


def oidc_router(settings: Settings, sessions: LoginSessions) -> APIRouter:
    """/login, /auth/callback and /logout for the provider in the settings."""
    config = oidc_config(settings)
    if not settings.oidc_redirect_url:
        raise OidcNotConfigured(
            "the browser login needs IMAGING_AGENT_OIDC_REDIRECT_URL: this service's /auth/callback URL as "
            "registered at the provider"
        )
    redirect_url = settings.oidc_redirect_url
    secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
    oauth = OAuth()
    client: Any = oauth.register(
        name="hospital",
        client_id=settings.oidc_client_id,
        client_secret=secret,
        server_metadata_url=config.issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={
            "scope": settings.oidc_scopes,
            "code_challenge_method": "S256",
            # a public client proves itself with PKCE alone
            "token_endpoint_auth_method": "client_secret_basic" if secret else "none",
            "timeout": settings.http_timeout_s,
        },
    )
    router = APIRouter(tags=["sign-in"])

    @router.get("/login", summary="Sign in with the hospital's OpenID provider")
    async def login(request: Request, next: str | None = None, fresh: bool = False) -> Response:
        request.session["next"] = local_path(next)
        # prompt=login + max_age=0: the provider asks for the password even within its own session
        extra = {"prompt": "login", "max_age": 0} if fresh else {}
        return await client.authorize_redirect(request, redirect_url, **extra)

    @router.get("/auth/callback", include_in_schema=False)
    async def callback(request: Request) -> Response:
        try:
            token = await client.authorize_access_token(request)
        except (OAuthError, OidcError) as exc:
            log.warning("OpenID sign-in failed at the callback: %s", exc)
            return refusal(401, f"the identity provider's answer was refused ({exc}); sign in again")
        claims = token.get("userinfo") or {}
        if claims.get("iss") != config.issuer:
            return refusal(401, f"the ID token comes from {claims.get('iss')!r}, not from {config.issuer!r}")
        try:
            principal = principal_from_claims(claims, config.issuer, config.roles_claim)
        except OidcError as exc:
            return refusal(403, str(exc))
        log.info("signed in: %s at %s (%s)", principal.id, principal.issuer, ", ".join(sorted(principal.roles)))
        response = RedirectResponse(local_path(request.session.pop("next", None)), status_code=303)
        sessions.start(response, principal, token.get("id_token"))
        return response

    @router.get("/logout", summary="Sign out here and at the provider")
    async def logout(request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        id_token = sessions.end(request.cookies, response)
        metadata = await client.load_server_metadata()
        if metadata.get("end_session_endpoint"):
            # A shared reading-room workstation: leaving the provider's session too means the next
            # person cannot sign in as the last one without a password.
            ended = await client.logout_redirect(request, id_token_hint=id_token, client_id=settings.oidc_client_id)
            ended.delete_cookie(SESSION_COOKIE, path="/")
            return ended
        return response

    return router
