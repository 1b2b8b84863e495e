"""Local accounts: the embedded default identity provider (`imaging-agent users`, the API's token endpoint).

Passwords are kept only as argon2id hashes (argon2-cffi's defaults, RFC 9106). After
`max_failures` wrong passwords in a row an account is locked for `lockout_s` seconds, even
against the right password, so guessing online is slow; every failure says the same thing,
whether the user exists or not.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel

from tools.identity.principal import LOCAL_ISSUER, ROLES, Principal, Role

_HASHER = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("imaging-agent: no such user")
MIN_PASSWORD_LENGTH = 8


class Account(BaseModel):
    username: str
    display_name: str
    roles: frozenset[Role]
    disabled: bool
    failed_attempts: int
    locked_until: datetime | None


class AccountError(ValueError):
    """An account cannot be added or changed; the message says why."""


class AuthenticationError(PermissionError):
    """Sign-in refused. The message never tells whether the user exists."""


class AccountStore:
    """The `users` table in the runtime's SQLite file."""

    def __init__(self, path: Path, *, max_failures: int = 5, lockout_s: float = 900.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS users (username TEXT PRIMARY KEY, display_name TEXT NOT NULL,"
                " roles TEXT NOT NULL, password_hash TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,"
                " failed_attempts INTEGER NOT NULL DEFAULT 0, locked_until TEXT, created_at TEXT NOT NULL)"
            )
            self._conn.commit()

    def close(self) -> None:
        self._conn.close()

    def add(self, username: str, password: str, roles: Iterable[str], display_name: str | None = None) -> Account:
        username = username.strip()
        wanted = frozenset(roles)
        if not username or any(c.isspace() for c in username):
            raise AccountError(f"user name {username!r} must be one word, not blank")
        if not wanted or not wanted <= set(ROLES):
            raise AccountError(f"roles {sorted(wanted)} for {username}: choose from {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"the password for {username} needs at least {MIN_PASSWORD_LENGTH} characters")
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO users (username, display_name, roles, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                    (username, (display_name or "").strip() or username, ",".join(sorted(wanted)),
                     _HASHER.hash(password), datetime.now(UTC).isoformat()),
                )
            except sqlite3.IntegrityError as exc:
                raise AccountError(f"user {username} exists already; `imaging-agent users list` shows them") from exc
            self._conn.commit()
        return self.get(username)

    def get(self, username: str) -> Account:
        with self._lock:
            row = self._conn.execute(
                "SELECT username, display_name, roles, disabled, failed_attempts, locked_until FROM users"
                " WHERE username = ?",
                (username,),
            ).fetchone()
        if row is None:
            raise AccountError(f"no user {username}; `imaging-agent users list` shows them")
        return _account(row)

    def list(self) -> list[Account]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT username, display_name, roles, disabled, failed_attempts, locked_until FROM users"
                " ORDER BY username"
            ).fetchall()
        return [_account(r) for r in rows]

    def disable(self, username: str) -> None:
        with self._lock:
            changed = self._conn.execute("UPDATE users SET disabled = 1 WHERE username = ?", (username,)).rowcount
            self._conn.commit()
        if not changed:
            raise AccountError(f"no user {username}; `imaging-agent users list` shows them")

    def is_active(self, username: str) -> bool:
        """The account exists and is not disabled (a token of a disabled account no longer counts)."""
        with self._lock:
            row = self._conn.execute("SELECT disabled FROM users WHERE username = ?", (username,)).fetchone()
        return row is not None and not row[0]

    def authenticate(self, username: str, password: str, now: datetime | None = None) -> Principal:
        """The account's principal for a right password; AuthenticationError otherwise (same words every time)."""
        now = now or datetime.now(UTC)
        refused = AuthenticationError(
            "sign-in refused: wrong user name or password, or the account is disabled or locked"
        )
        with self._lock:
            row = self._conn.execute(
                "SELECT display_name, roles, password_hash, disabled, failed_attempts, locked_until FROM users"
                " WHERE username = ?",
                (username,),
            ).fetchone()
            if row is None:
                _verifies(_DUMMY_HASH, password)
                raise refused
            display_name, roles, password_hash, disabled, failures, locked_until = row
            if locked_until and datetime.fromisoformat(locked_until) > now:
                raise refused
            if not _verifies(password_hash, password) or disabled:
                failures += 1
                lock = (now + timedelta(seconds=self.lockout_s)).isoformat() if failures >= self.max_failures else None
                self._conn.execute(
                    "UPDATE users SET failed_attempts = ?, locked_until = ? WHERE username = ?",
                    (0 if lock else failures, lock, username),
                )
                self._conn.commit()
                raise refused
            self._conn.execute(
                "UPDATE users SET failed_attempts = 0, locked_until = NULL WHERE username = ?", (username,)
            )
            self._conn.commit()
        return Principal(
            id=username,
            display_name=display_name,
            issuer=LOCAL_ISSUER,
            roles=frozenset(roles.split(",")),
            auth_time=now,
            auth_method="password",
        )


def _verifies(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _account(row: tuple) -> Account:
    username, display_name, roles, disabled, failures, locked_until = row
    return Account(
        username=username,
        display_name=display_name,
        roles=frozenset(roles.split(",")),
        disabled=bool(disabled),
        failed_attempts=failures,
        locked_until=datetime.fromisoformat(locked_until) if locked_until else None,
    )
