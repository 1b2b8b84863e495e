"""Bring a database to the newest schema with Alembic, run by every process that opens the state.

Several processes may start at once on a fresh database (two workers, a CLI beside the service):
on PostgreSQL an advisory lock makes them migrate one after the other; on SQLite a lock file beside
the database does. A database at the newest revision is only read.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from tools.state.database import SQLITE, StateDatabaseError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any fixed 64-bit number, the same in every process of this project.
_ADVISORY_LOCK_KEY = 0x1A6E_5747_E000_0012


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no migrations under {MIGRATIONS}"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, *, also: Callable[[], None] | None = None) -> None:
    """Upgrade to the newest revision; `also` runs under the same lock (another library's own setup)."""
    try:
        with _migration_lock(engine) as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
            if also is not None:
                also()
    except OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise StateDatabaseError(
            f"cannot open the state database {where}: {exc.orig}. Start it (`imaging-agent services up --scale` "
            "runs a local PostgreSQL) or correct IMAGING_AGENT_DATABASE_URL."
        ) from exc


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    if engine.dialect.name == SQLITE:
        lock_path = Path(f"{engine.url.database}.migrate.lock")
        with lock_path.open("a") as lock_file, engine.connect() as conn:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield conn
        return
    with engine.connect() as conn:
        # Session-level: held across the migration's own transactions, released when this ends.
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
        conn.commit()
        try:
            yield conn
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_LOCK_KEY})
            conn.commit()
