"""The browser side of `imaging-agent serve`: sign-in sessions and the Gradio app behind them.

A browser signs in at `/login`: through the hospital's OpenID provider when one is configured
(`agent/api/oidc_routes.py`), else with a local account on a small form here. Either way the
principal lives in a server-side session whose id is in a signed, HttpOnly cookie; `/logout`
ends it. The Gradio app is served at `/ui` to a signed-in browser only (every Gradio route asks
the session, `auth_dependency`), and its Approve / Reject sign with the session's principal
(`LoginSessions.identify`): nothing typed into the page names the reviewer.
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, TimestampSigner

from agent.settings import Settings
from tools.identity.accounts import AccountStore, AuthenticationError
from tools.identity.principal import Principal

SESSION_COOKIE = "imaging_agent_session"
SESSION_MAX_AGE_S = 8 * 3600
"""A browser session lasts a working shift at most; signing needs a fresher sign-in anyway."""
UI_PATH = "/ui"


@dataclass(frozen=True)
class _Session:
    principal: Principal
    id_token: str | None
    expires_at: float


class LoginSessions:
    """Signed-in browsers: server-side records, found by a random id in a signed HttpOnly cookie.

    Kept in this process's memory: a restart signs everyone out, and `/logout` really ends a
    session (a copied cookie is worthless afterwards), which a self-contained cookie could not."""

    def __init__(self, secret: str, *, max_age_s: float = SESSION_MAX_AGE_S, secure: bool = False) -> None:
        self._signer = TimestampSigner(secret, salt="imaging-agent-session")
        self._max_age_s = max_age_s
        self._secure = secure
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def start(self, response: Response, principal: Principal, id_token: str | None = None) -> None:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at > now}
            self._sessions[sid] = _Session(principal, id_token, now + self._max_age_s)
        response.set_cookie(
            SESSION_COOKIE, self._signer.sign(sid).decode(), max_age=int(self._max_age_s), path="/",
            httponly=True, samesite="lax", secure=self._secure,
        )

    def _sid(self, cookies: Mapping[str, str]) -> str | None:
        raw = cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            return self._signer.unsign(raw, max_age=self._max_age_s).decode()
        except BadSignature:
            return None

    def principal(self, cookies: Mapping[str, str]) -> Principal | None:
        """The signed-in principal of these cookies, or None."""
        sid = self._sid(cookies)
        with self._lock:
            session = self._sessions.get(sid) if sid else None
        if session is None or session.expires_at <= time.time():
            return None
        return session.principal

    def identify(self, request: gr.Request) -> Principal | None:
        """The principal behind a Gradio event (its cookies are those of the page's requests)."""
        return self.principal(request.cookies)

    def end(self, cookies: Mapping[str, str], response: Response) -> str | None:
        """Forget the session; its ID token (for the provider's logout), if any."""
        sid = self._sid(cookies)
        with self._lock:
            session = self._sessions.pop(sid, None) if sid else None
        response.delete_cookie(SESSION_COOKIE, path="/")
        return session.id_token if session else None


def new_sessions(settings: Settings) -> LoginSessions:
    """Sessions signed with a key of this process (sessions end with it)."""
    return LoginSessions(secrets.token_urlsafe(32), secure=https_only(settings))


def https_only(settings: Settings) -> bool:
    """Cookies marked Secure when the service is reached over HTTPS (its callback URL says so)."""
    return (settings.oidc_redirect_url or "").startswith("https://")


def local_path(target: str | None, default: str = UI_PATH + "/") -> str:
    """Where to go after signing in: a path on this service only (never another site)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def refusal(status: int, message: str) -> HTMLResponse:
    body = (
        "<!doctype html><title>Sign-in refused</title><h1>Sign-in refused</h1><p id='sign-in-error'>"
        f"{html.escape(message)}</p><p><a href='/login'>Sign in again</a></p>"
    )
    return HTMLResponse(body, status_code=status)


def _login_form(next_path: str, error: str = "") -> str:
    message = f"<p id='sign-in-error'>{html.escape(error)}</p>" if error else ""
    return (
        "<!doctype html><title>Sign in: imaging-agent</title><h1>imaging-agent</h1>"
        f"<p>Sign in with your imaging-agent account.</p>{message}"
        "<form method='post' action='/login'>"
        f"<input type='hidden' name='next' value='{html.escape(next_path, quote=True)}'>"
        "<label>User name <input name='username' id='username' autocomplete='username' autofocus></label> "
        "<label>Password <input name='password' id='password' type='password' autocomplete='current-password'>"
        "</label> <button type='submit' id='sign-in'>Sign in</button></form>"
    )


def local_login_router(sessions: LoginSessions) -> APIRouter:
    """/login with a local account (`imaging-agent users`), /logout: the embedded default."""
    router = APIRouter(tags=["sign-in"])

    @router.get("/login", response_class=HTMLResponse, summary="Sign in with a local account")
    def login_form(next: str | None = None, fresh: bool = False) -> HTMLResponse:  # noqa: ARG001
        # `fresh` asks for the password again: this form always does.
        return HTMLResponse(_login_form(local_path(next)))

    @router.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        username, password = str(form.get("username", "")), str(form.get("password", ""))
        next_path = local_path(str(form.get("next", "")))
        accounts: AccountStore = request.app.state.accounts
        try:
            principal = await run_in_threadpool(accounts.authenticate, username, password)
        except AuthenticationError as exc:
            return HTMLResponse(_login_form(next_path, str(exc)), status_code=401)
        response = RedirectResponse(next_path, status_code=303)
        sessions.start(response, principal)
        return response

    @router.get("/logout", summary="Sign out")
    def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        sessions.end(request.cookies, response)
        return response

    return router


def mount_ui(app: FastAPI, blocks: gr.Blocks, sessions: LoginSessions, path: str = UI_PATH) -> None:
    """The Gradio app at `path`, for signed-in browsers only (every Gradio route checks the session)."""

    def user(request: Request) -> str | None:
        principal = sessions.principal(request.cookies)
        return principal.id if principal else None

    @app.middleware("http")
    async def send_to_login(request: Request, call_next: Any) -> Response:
        # A browser opening the page without a session goes to the sign-in; Gradio's own routes
        # answer 401 to everything else.
        if request.method == "GET" and request.url.path in (path, path + "/") and user(request) is None:
            return RedirectResponse(f"/login?next={path}/", status_code=303)
        return await call_next(request)

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    blocks.queue(default_concurrency_limit=4)
    gr.mount_gradio_app(
        app, blocks, path=path, auth_dependency=user, theme=theme, footer_links=[], show_error=False, ssr_mode=False
    )
