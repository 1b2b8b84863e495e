"""The browser sign-in routes against the real OpenID provider, without a browser: what /login
asks for, what /auth/callback accepts, and what /logout ends."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.middleware.sessions import SessionMiddleware

from agent.api.browser import SESSION_COOKIE, LoginSessions, local_path
from agent.api.oidc_routes import oidc_router
from agent.settings import Settings
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, NO_ROLE, RADIOLOGIST, SCOPES, Provider, sign_in_at_provider

pytestmark = pytest.mark.integration


@pytest.fixture()
def sessions() -> LoginSessions:
    return LoginSessions("test-secret")


@pytest.fixture()
def client(oidc_provider: Provider, sessions: LoginSessions) -> Iterator[TestClient]:
    settings = Settings(
        oidc_issuer=oidc_provider.issuer, oidc_client_id=CLIENT_ID, oidc_client_secret=SecretStr(CLIENT_SECRET),
        oidc_redirect_url=oidc_provider.redirect_uri, oidc_scopes=SCOPES, _env_file=None,
    )
    app = FastAPI()
    app.add_middleware(SessionMiddleware, secret_key="login-state-secret")
    app.include_router(oidc_router(settings, sessions))

    @app.get("/whoami")
    def whoami(request: Request) -> dict[str, str | None]:
        principal = sessions.principal(request.cookies)
        return {"id": principal.id if principal else None, "issuer": principal.issuer if principal else None}

    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def _callback_query(client: TestClient, provider: Provider, user: object, **login: str) -> str:
    started = client.get("/login", params=login)
    assert started.status_code == 302, started.text
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        back = sign_in_at_provider(browser, started.headers["location"], user, provider.redirect_uri)  # type: ignore[arg-type]
    return urlsplit(back).query


def test_login_asks_for_code_with_pkce_and_fresh_asks_for_the_password_again(
    client: TestClient, oidc_provider: Provider
) -> None:
    plain = parse_qs(urlsplit(client.get("/login").headers["location"]).query)
    assert plain["response_type"] == ["code"] and plain["code_challenge_method"] == ["S256"]
    assert plain["code_challenge"] and plain["nonce"] and plain["state"]
    assert "prompt" not in plain
    fresh = parse_qs(urlsplit(client.get("/login", params={"fresh": "1"}).headers["location"]).query)
    assert fresh["prompt"] == ["login"] and fresh["max_age"] == ["0"]


def test_callback_signs_the_radiologist_in_and_logout_ends_it(client: TestClient, oidc_provider: Provider) -> None:
    query = _callback_query(client, oidc_provider, RADIOLOGIST, next="/ui/?tab=approvals")
    done = client.get(f"/auth/callback?{query}")
    assert done.status_code == 303 and done.headers["location"] == "/ui/?tab=approvals"
    assert client.get("/whoami").json() == {"id": RADIOLOGIST.username, "issuer": oidc_provider.issuer}

    cookie = client.cookies.get(SESSION_COOKIE)
    # the same answer from the provider cannot be used twice
    assert client.get(f"/auth/callback?{query}").status_code == 401

    ended = client.get("/logout")
    assert ended.status_code == 302 and ended.headers["location"].startswith(oidc_provider.issuer)
    assert client.get("/whoami").json()["id"] is None
    # a copy of the old cookie is worthless once signed out
    replay = TestClient(client.app, cookies={SESSION_COOKIE: cookie})
    assert replay.get("/whoami").json()["id"] is None


def test_callback_refuses_a_user_without_a_role(client: TestClient, oidc_provider: Provider) -> None:
    refused = client.get(f"/auth/callback?{_callback_query(client, oidc_provider, NO_ROLE)}")
    assert refused.status_code == 403
    assert "holds none of the roles" in refused.text
    assert client.get("/whoami").json()["id"] is None


def test_callback_refuses_an_answer_it_did_not_ask_for(client: TestClient, oidc_provider: Provider) -> None:
    query = _callback_query(client, oidc_provider, RADIOLOGIST)
    other = TestClient(client.app, follow_redirects=False)  # another browser: no login state of its own
    assert other.get(f"/auth/callback?{query}").status_code == 401
    assert other.get("/whoami").json()["id"] is None


def test_tampered_session_cookie_is_nobody(sessions: LoginSessions) -> None:
    assert sessions.principal({SESSION_COOKIE: "ana.lee"}) is None
    assert sessions.principal({SESSION_COOKIE: LoginSessions("another-secret")._signer.sign("x").decode()}) is None


def test_after_sign_in_only_local_paths() -> None:
    assert local_path("/ui/", "/d") == "/ui/"
    for outside in ("https://evil.example/", "//evil.example/", "/\\evil.example", None, ""):
        assert local_path(outside, "/d") == "/d"
