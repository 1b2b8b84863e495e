"""Who is deciding at the command line: the principal of `imaging-agent login`, or the OS account.

With a kept login (`imaging-agent login`, a token in the run directory, 0600), the configured
service (`IMAGING_AGENT_API_HOST`/`_PORT`) says who the token belongs to (`GET /api/v1/auth/me`),
so a token that expired, was forged or belongs to a disabled account decides nothing; a login kept
for any other URL is refused rather than asked about at that URL, which could vouch for anyone. Without one, the reviewer is the OS
account of the process's real uid, and only if the settings list it as a radiologist
(`IMAGING_AGENT_LOCAL_RADIOLOGISTS`); `$USER` plays no part.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from pydantic import BaseModel

from agent.settings import Settings
from tools.identity.accounts import AccountStore
from tools.identity.os_account import os_radiologist
from tools.identity.principal import NotAllowedError, Principal
from tools.identity.tokens import TokenSigner, load_or_create_secret


class SignInError(RuntimeError):
    """Nobody authenticated can decide here; the message says how to sign in."""


class KeptLogin(BaseModel):
    url: str
    access_token: str


def keep_login(path: Path, login: KeptLogin) -> None:
    """Write the login readable by its owner only (0600), replacing an older one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(login.model_dump_json())
    tmp.replace(path)


def kept_login(path: Path) -> KeptLogin | None:
    if not path.exists():
        return None
    return KeptLogin.model_validate(json.loads(path.read_text()))


def principal_from_service(login: KeptLogin, service_url: str, timeout_s: float = 10.0) -> Principal:
    """The principal the configured service at `service_url` vouches for; SignInError when it does not."""
    if login.url.rstrip("/") != service_url.rstrip("/"):
        raise SignInError(
            f"your kept login is for {login.url}, but the configured service is {service_url}: sign in there "
            "(`imaging-agent login`) or sign out (`imaging-agent logout`)"
        )
    try:
        response = httpx.get(
            f"{login.url.rstrip('/')}/api/v1/auth/me",
            headers={"Authorization": f"Bearer {login.access_token}"},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        raise SignInError(
            f"the service at {login.url} that issued your login does not answer ({exc}); start it "
            "(`imaging-agent serve`) or sign in again (`imaging-agent login`)"
        ) from exc
    if response.status_code == 401:
        raise SignInError(f"your login at {login.url} is no longer valid: sign in again (`imaging-agent login`)")
    if response.status_code != 200:
        raise SignInError(
            f"the service at {login.url} could not say whose login this is (HTTP {response.status_code}); "
            "sign in again (`imaging-agent login`)"
        )
    return Principal.model_validate(response.json())


def cli_principal(settings: Settings) -> Principal:
    """The principal deciding at this terminal; SignInError says how to become one."""
    login = kept_login(settings.cli_token_path)
    if login is not None:
        return principal_from_service(login, settings.api_url)
    try:
        return os_radiologist(settings.local_radiologists)
    except NotAllowedError as exc:
        raise SignInError(str(exc)) from exc


@contextmanager
def account_store(settings: Settings) -> Iterator[AccountStore]:
    """The local accounts, in the runtime's database (its schema brought up to date), with the configured lockout."""
    from agent.parts import migrated_database

    with migrated_database(settings) as engine:
        yield AccountStore(engine, max_failures=settings.login_max_failures, lockout_s=settings.login_lockout_s)


def token_signer(settings: Settings) -> TokenSigner:
    """The API's token signer, its secret made on first use in the run directory (0600)."""
    return TokenSigner(load_or_create_secret(settings.token_secret_path), ttl_s=settings.access_token_ttl_s)
