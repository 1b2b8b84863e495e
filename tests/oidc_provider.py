"""A real OpenID provider for the tests: npm's certified `oidc-provider` under Debian's node.

`tests/oidc/` pins it (package.json + package-lock.json); `ensure_installed` runs `npm ci` there
once (scripts/bootstrap.sh does too). `running_provider` starts `tests/oidc/server.mjs` on a free
127.0.0.1 port with the users and clients below and stops exactly that process afterwards.
`code_flow_tokens` signs a user in through the provider's own login form (authorization code +
PKCE, plain HTTP) for tests that need a user's tokens without a browser.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
NODE = "node"

API_AUDIENCE = "urn:imaging-agent:api"
OTHER_AUDIENCE = "urn:other-hospital-app:api"
CLIENT_ID = "imaging-agent"
CLIENT_SECRET = "imaging-agent-test-secret-0123456789"
OTHER_CLIENT_ID = "other-app"
SHORT_LIVED_CLIENT_ID = "imaging-agent-short-lived"
SCOPES = "openid profile roles"


@dataclass(frozen=True)
class OidcUser:
    username: str
    password: str
    name: str
    roles: tuple[str, ...] | None

    def as_json(self) -> dict[str, object]:
        data: dict[str, object] = {"username": self.username, "password": self.password, "name": self.name}
        if self.roles is not None:
            data["roles"] = list(self.roles)
        return data


RADIOLOGIST = OidcUser("ana.lee", "ana-lee-password-1", "Dr. Ana Lee", ("radiologist",))
OPERATOR = OidcUser("omar.ops", "omar-ops-password-1", "Omar Operator", ("operator",))
NO_ROLE = OidcUser("nora.norole", "nora-norole-password-1", "Nora No-Role", None)
USERS = (RADIOLOGIST, OPERATOR, NO_ROLE)


@dataclass(frozen=True)
class Provider:
    issuer: str
    redirect_uri: str
    pid: int
    jwks_file: Path


def ensure_installed() -> None:
    """`npm ci` in tests/oidc when its node_modules is missing or older than the lock file."""
    if shutil.which(NODE) is None or shutil.which("npm") is None:
        raise RuntimeError("node and npm are missing: run ./scripts/bootstrap.sh (Debian's nodejs and npm)")
    stamp = OIDC_DIR / "node_modules" / ".package-lock.json"
    lock = OIDC_DIR / "package-lock.json"
    if stamp.is_file() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=OIDC_DIR, check=True, timeout=600
    )


def _clients(redirect_uri: str) -> list[dict[str, object]]:
    confidential = {
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
        # auth_time in every ID token: the signing window counts from it
        "require_auth_time": True,
    }
    return [
        {"client_id": CLIENT_ID, **confidential},
        {"client_id": OTHER_CLIENT_ID, **confidential},
        {"client_id": SHORT_LIVED_CLIENT_ID, **confidential},
    ]


@contextmanager
def running_provider(workdir: Path, port: int, redirect_uri: str, jwks_file: Path | None = None) -> Iterator[Provider]:
    """The provider on 127.0.0.1:`port` until the block ends; two started with one `jwks_file` sign alike."""
    ensure_installed()
    issuer = f"http://127.0.0.1:{port}"
    jwks_file = jwks_file or workdir / "jwks.json"
    config = {
        "issuer": issuer,
        "port": port,
        "jwks_file": str(jwks_file),
        "clients": _clients(redirect_uri),
        "users": [u.as_json() for u in USERS],
        "audience": API_AUDIENCE,
        "other_client": OTHER_CLIENT_ID,
        "other_audience": OTHER_AUDIENCE,
        "short_lived_client": SHORT_LIVED_CLIENT_ID,
    }
    config_file = workdir / f"oidc-provider-{port}.json"
    config_file.write_text(json.dumps(config))
    log = (workdir / f"oidc-provider-{port}.log").open("w")
    process = subprocess.Popen(
        [NODE, str(OIDC_DIR / "server.mjs"), str(config_file)], stdout=log, stderr=subprocess.STDOUT, cwd=OIDC_DIR
    )
    try:
        _wait_ready(issuer, process, workdir / f"oidc-provider-{port}.log")
        yield Provider(issuer=issuer, redirect_uri=redirect_uri, pid=process.pid, jwks_file=jwks_file)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _wait_ready(issuer: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the OpenID provider exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the OpenID provider at {issuer} did not answer within {timeout_s:.0f} s: {log.read_text()[-2000:]}")


def code_flow_tokens(
    provider: Provider, user: OidcUser, client_id: str = CLIENT_ID, scope: str = SCOPES
) -> dict[str, object]:
    """Sign `user` in through the provider's login form (code + PKCE) and return the token response."""
    metadata = httpx.get(f"{provider.issuer}/.well-known/openid-configuration").json()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    params = {
        "client_id": client_id, "response_type": "code", "scope": scope, "redirect_uri": provider.redirect_uri,
        "state": state, "nonce": secrets.token_urlsafe(16), "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        url = str(httpx.URL(metadata["authorization_endpoint"], params=params))
        query = parse_qs(urlsplit(sign_in_at_provider(browser, url, user, provider.redirect_uri)).query)
        assert query["state"] == [state], query
        code = query["code"][0]
        tokens = browser.post(
            metadata["token_endpoint"],
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": provider.redirect_uri,
                  "code_verifier": verifier},
            auth=(client_id, CLIENT_SECRET),
        )
    assert tokens.status_code == 200, tokens.text
    return tokens.json()


def sign_in_at_provider(browser: httpx.Client, authorize_url: str, user: OidcUser, redirect_uri: str) -> str:
    """Follow an authorization request through the provider's login form; the URL it sends back to."""
    response = browser.get(authorize_url)
    for _ in range(10):
        location = response.headers.get("location")
        if location and location.startswith(redirect_uri):
            return location
        if location:
            response = browser.get(urljoin(str(response.url), location))
            continue
        form = re.search(r'<form method="post" action="([^"]+)"', response.text)
        assert form, f"no login form at {response.url}: {response.status_code} {response.text[:500]}"
        response = browser.post(
            urljoin(str(response.url), form.group(1)), data={"username": user.username, "password": user.password}
        )
        assert response.status_code in (302, 303), f"login refused for {user.username}: {response.text[:300]}"
    raise AssertionError("the provider never redirected back to the client")
