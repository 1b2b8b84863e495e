"""Bearer token -> `Principal`, and the role checks of each endpoint (401 unknown, 403 not allowed).

A token is this service's own (local accounts) or, when OpenID Connect is configured and the
token names the provider as its issuer, the provider's access token, checked against its keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from tools.identity.accounts import AccountStore
from tools.identity.oidc import OidcError, OidcVerifier, unverified_issuer
from tools.identity.principal import LOCAL_ISSUER, Principal, Role
from tools.identity.tokens import InvalidTokenError, TokenSigner

TOKEN_URL = "/api/v1/auth/token"
_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def current_principal(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> Principal:
    if not token:
        raise unauthorized("sign in first: POST /api/v1/auth/token, then send 'Authorization: Bearer TOKEN'")
    oidc: OidcVerifier | None = request.app.state.oidc
    if oidc is not None and unverified_issuer(token) == oidc.config.issuer:
        try:
            return oidc.principal(token)
        except OidcError as exc:
            raise unauthorized(str(exc)) from exc
    signer: TokenSigner = request.app.state.signer
    accounts: AccountStore = request.app.state.accounts
    try:
        principal = signer.verify(token)
    except InvalidTokenError as exc:
        raise unauthorized(str(exc)) from exc
    # Tokens are not stored; a disabled local account stops counting at once all the same.
    if principal.issuer == LOCAL_ISSUER and not accounts.is_active(principal.id):
        raise unauthorized(f"the account {principal.id} is disabled or gone: sign in with another account")
    return principal


def requires(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency: the principal, if it holds one of `roles` (403 otherwise)."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.roles & set(roles):
            held = ", ".join(sorted(principal.roles)) or "no role"
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"{principal.id} ({held}) may not do this: it needs the {' or '.join(roles)} role",
            )
        return principal

    return check
