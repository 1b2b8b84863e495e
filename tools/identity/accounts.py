"""Local accounts: the embedded default identity provider (`imaging-agent users`, the API's token endpoint).

Passwords are kept only as argon2id hashes (argon2-cffi's defaults, RFC 9106). After
`max_failures` wrong passwords in a row an account is locked for `lockout_s` seconds, even
against the right password, so guessing online is slow; every failure says the same thing,
whether the user exists or not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from tools.identity.principal import LOCAL_ISSUER, ROLES, Principal, Role
from tools.state.schema import users

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


_ACCOUNT_COLUMNS = (
    users.c.username, users.c.display_name, users.c.roles, users.c.disabled, users.c.failed_attempts,
    users.c.locked_until,
)


class AccountStore:
    """The `users` table of the runtime's database (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, *, max_failures: int = 5, lockout_s: float = 900.0) -> None:
        self.engine = engine
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        # Counting failures reads and then writes a row: one sign-in at a time in this process, and
        # the row locked (FOR UPDATE) against other processes where the database can lock rows.
        self._lock = threading.Lock()

    def add(self, username: str, password: str, roles: Iterable[str], display_name: str | None = None) -> Account:
        username = username.strip()
        wanted = frozenset(roles)
        if not username or any(c.isspace() for c in username):
            raise AccountError(f"user name {username!r} must be one word, not blank")
        if not wanted or not wanted <= set(ROLES):
            raise AccountError(f"roles {sorted(wanted)} for {username}: choose from {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"the password for {username} needs at least {MIN_PASSWORD_LENGTH} characters")
        row = {
            "username": username,
            "display_name": (display_name or "").strip() or username,
            "roles": ",".join(sorted(wanted)),
            "password_hash": _HASHER.hash(password),
            "created_at": datetime.now(UTC).isoformat(),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(users).values(**row))
        except IntegrityError as exc:
            raise AccountError(f"user {username} exists already; `imaging-agent users list` shows them") from exc
        return self.get(username)

    def get(self, username: str) -> Account:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_ACCOUNT_COLUMNS).where(users.c.username == username)).mappings().first()
        if row is None:
            raise AccountError(f"no user {username}; `imaging-agent users list` shows them")
        return _account(row)

    def list(self) -> list[Account]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_ACCOUNT_COLUMNS).order_by(users.c.username)).mappings().all()
        return [_account(r) for r in rows]

    def disable(self, username: str) -> None:
        with self.engine.begin() as conn:
            changed = conn.execute(update(users).where(users.c.username == username).values(disabled=1)).rowcount
        if not changed:
            raise AccountError(f"no user {username}; `imaging-agent users list` shows them")

    def is_active(self, username: str) -> bool:
        """The account exists and is not disabled (a token of a disabled account no longer counts)."""
        with self.engine.connect() as conn:
            disabled = conn.execute(select(users.c.disabled).where(users.c.username == username)).scalar_one_or_none()
        return disabled is not None and not disabled

    def authenticate(self, username: str, password: str, now: datetime | None = None) -> Principal:
        """The account's principal for a right password; AuthenticationError otherwise (same words every time)."""
        now = now or datetime.now(UTC)
        refused = AuthenticationError(
            "sign-in refused: wrong user name or password, or the account is disabled or locked"
        )
        query = (
            select(users.c.display_name, users.c.roles, users.c.password_hash, users.c.disabled,
                   users.c.failed_attempts, users.c.locked_until)
            .where(users.c.username == username)
            .with_for_update()
        )
        this_user = users.c.username == username
        # Commit as we go: a refused sign-in must still commit its failure count.
        with self._lock, self.engine.connect() as conn:
            row = conn.execute(query).first()
            if row is None:
                _verifies(_DUMMY_HASH, password)
                raise refused
            display_name, roles, password_hash, disabled, failures, locked_until = row
            if locked_until and datetime.fromisoformat(locked_until) > now:
                raise refused
            if not _verifies(password_hash, password) or disabled:
                failures += 1
                lock = (now + timedelta(seconds=self.lockout_s)).isoformat() if failures >= self.max_failures else None
                conn.execute(
                    update(users).where(this_user).values(failed_attempts=0 if lock else failures, locked_until=lock)
                )
                conn.commit()
                raise refused
            conn.execute(update(users).where(this_user).values(failed_attempts=0, locked_until=None))
            conn.commit()
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


def _account(row: Any) -> Account:
    return Account(
        username=row["username"],
        display_name=row["display_name"],
        roles=frozenset(row["roles"].split(",")),
        disabled=bool(row["disabled"]),
        failed_attempts=row["failed_attempts"],
        locked_until=datetime.fromisoformat(row["locked_until"]) if row["locked_until"] else None,
    )
