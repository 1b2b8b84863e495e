"""Local accounts (on SQLite and PostgreSQL), access tokens and the OS-account reviewer (tools/identity)."""

from __future__ import annotations

import os
import pwd
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from sqlalchemy import Engine, select

from tools.identity.accounts import AccountError, AccountStore, AuthenticationError
from tools.identity.os_account import os_radiologist
from tools.identity.principal import LOCAL_ISSUER, NotAllowedError
from tools.identity.tokens import InvalidTokenError, TokenSigner, load_or_create_secret
from tools.state.schema import users

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"


def _store(engine: Engine, **kwargs: float) -> AccountStore:
    store = AccountStore(engine, **kwargs)  # type: ignore[arg-type]
    store.add("dr-lee", PASSWORD, ["radiologist"], "Dr. Ana Lee")
    return store


def test_only_an_argon2_hash_is_stored(state_engine: Engine) -> None:
    _store(state_engine)
    with state_engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(select(users))]
    assert PASSWORD not in repr(rows)
    if state_engine.dialect.name == "sqlite":  # nor anywhere in the file (a journal, a free page)
        assert PASSWORD.encode() not in Path(state_engine.url.database or "").read_bytes()
    [stored] = [row[3] for row in rows]
    assert stored.startswith("$argon2id$")


def test_the_right_password_gives_the_principal(state_engine: Engine) -> None:
    principal = _store(state_engine).authenticate("dr-lee", PASSWORD)
    assert (principal.id, principal.display_name, principal.issuer) == ("dr-lee", "Dr. Ana Lee", LOCAL_ISSUER)
    assert principal.roles == {"radiologist"} and principal.auth_method == "password"


def test_lockout_after_repeated_failures_even_for_the_right_password(state_engine: Engine) -> None:
    store = _store(state_engine, max_failures=3, lockout_s=600)
    now = datetime.now(UTC)
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            store.authenticate("dr-lee", "guess", now)
    with pytest.raises(AuthenticationError) as locked:
        store.authenticate("dr-lee", PASSWORD, now)
    assert "dr-lee" not in str(locked.value)  # the same words whether the user exists or not
    assert store.get("dr-lee").locked_until is not None
    assert store.authenticate("dr-lee", PASSWORD, now + timedelta(seconds=601)).id == "dr-lee"


def test_unknown_and_disabled_users_are_refused_alike(state_engine: Engine) -> None:
    store = _store(state_engine)
    with pytest.raises(AuthenticationError) as unknown:
        store.authenticate("nobody", PASSWORD)
    store.disable("dr-lee")
    with pytest.raises(AuthenticationError) as disabled:
        store.authenticate("dr-lee", PASSWORD)
    assert str(unknown.value) == str(disabled.value)
    assert not store.is_active("dr-lee")


def test_accounts_are_checked_when_added(state_engine: Engine) -> None:
    store = _store(state_engine)
    with pytest.raises(AccountError, match="exists already"):
        store.add("dr-lee", PASSWORD, ["radiologist"])
    with pytest.raises(AccountError, match="choose from"):
        store.add("x", PASSWORD, ["surgeon"])
    with pytest.raises(AccountError, match="at least"):
        store.add("x", "short", ["operator"])


def test_tokens_carry_the_principal_and_forgeries_fail(tmp_path: Path, state_engine: Engine) -> None:
    secret_path = tmp_path / "secret"
    signer = TokenSigner(load_or_create_secret(secret_path), ttl_s=60)
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    principal = _store(state_engine).authenticate("dr-lee", PASSWORD)
    token = signer.issue(principal)
    assert signer.verify(token).model_dump() == principal.model_copy(
        update={"auth_time": principal.auth_time.replace(microsecond=0)}
    ).model_dump()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert {"sub", "name", "iss", "roles", "auth_time", "amr", "exp"} <= set(claims)
    forged = jwt.encode({**claims, "roles": ["radiologist", "admin"]}, b"not the secret, though as long as one" * 2, algorithm="HS256")
    with pytest.raises(InvalidTokenError):
        signer.verify(forged)
    expired = TokenSigner(load_or_create_secret(secret_path), ttl_s=-1).issue(principal)
    with pytest.raises(InvalidTokenError, match="sign in again"):
        signer.verify(expired)


def test_the_os_reviewer_is_the_real_uid_not_user(monkeypatch: pytest.MonkeyPatch) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("USER", "dr-fake")
    monkeypatch.setenv("LOGNAME", "dr-fake")
    assert os_radiologist([me]).id == me
    with pytest.raises(NotAllowedError, match="not listed as a radiologist"):
        os_radiologist(["dr-fake"])


def test_racing_first_uses_of_the_token_secret_all_read_the_same_whole_secret(tmp_path: Path) -> None:
    """The service and a CLI command starting together: nobody may read the file before it is written."""
    from concurrent.futures import ThreadPoolExecutor

    from tools.identity.tokens import load_or_create_secret

    for attempt in range(20):
        path = tmp_path / f"secret-{attempt}"
        with ThreadPoolExecutor(max_workers=8) as pool:
            secrets_read = list(pool.map(lambda _: load_or_create_secret(path), range(8)))
        assert len(set(secrets_read)) == 1 and len(secrets_read[0]) == 32
        assert path.stat().st_mode & 0o777 == 0o600
