"""The SQLAlchemy engine over the project's tables, from one database URL.

Two backends, the same code above them: SQLite (`sqlite:////abs/path/agent.sqlite`, the embedded
default) and PostgreSQL (`postgresql://user:password@host:port/db`, for several processes or
machines). PostgreSQL is reached through psycopg 3, the driver LangGraph's checkpointer uses too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

# SQLAlchemy is imported where a URL is parsed or an engine built: the settings import this
# module, and `imaging-agent contour` never opens the database (issue 11).
if TYPE_CHECKING:
    from sqlalchemy import URL, Engine

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


class DatabaseUrlError(ValueError):
    """A database URL this project cannot use; the message says which forms it takes."""


class StateDatabaseError(RuntimeError):
    """The runtime's database cannot be reached or upgraded; the message says which and what to do."""


def unreachable_errors() -> tuple[type[Exception], ...]:
    """What the state database out of reach raises (down, restarting, no free connection in time): a pause
    for the job, which goes on from its last checkpoint once the database is back, never a study's failure."""
    import psycopg
    from psycopg_pool import PoolTimeout
    from sqlalchemy.exc import OperationalError

    return (StateDatabaseError, OperationalError, psycopg.OperationalError, PoolTimeout)


def parse_database_url(database_url: str) -> URL:
    """The URL with its driver made explicit (psycopg 3 for PostgreSQL), or DatabaseUrlError."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise DatabaseUrlError(f"{exc}; {_FORMS}") from None
    backend = url.get_backend_name()
    if backend == SQLITE and url.drivername == SQLITE and url.database not in (None, "", ":memory:"):
        return url
    if backend in (POSTGRESQL, "postgres") and url.drivername.split("+")[-1] in (POSTGRESQL, "postgres", "psycopg"):
        # SQLAlchemy's plain "postgresql://" means psycopg2, which is not installed: say psycopg 3.
        return url.set(drivername="postgresql+psycopg")
    raise DatabaseUrlError(
        f"unsupported database URL {url.render_as_string(hide_password=True)!r}; {_FORMS}"
    )


_FORMS = (
    "use sqlite:////absolute/path/agent.sqlite or postgresql://USER:PASSWORD@HOST:PORT/DATABASE "
    "(IMAGING_AGENT_DATABASE_URL, see .env.example)"
)


def sqlite_url(path: Path) -> str:
    """The URL of a SQLite file (its absolute path: four slashes)."""
    return f"sqlite:///{path.resolve()}"


def state_engine(database_url: str) -> Engine:
    """An engine (a connection pool) over the database; nothing is connected until first use."""
    from sqlalchemy import create_engine

    url = parse_database_url(database_url)
    if url.get_backend_name() == SQLITE:
        Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
        # Threads share the pool (a job's heartbeat runs in one); wait up to 30 s for another
        # process's write lock, as the hand-written stores did.
        return create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
    # A server restarted under a long-lived process leaves dead connections in the pool: test each
    # one before use so the next statement reconnects instead of failing.
    return create_engine(url, pool_pre_ping=True)


def libpq_url(url: URL) -> str:
    """The PostgreSQL URL as libpq (psycopg, LangGraph's checkpointer) reads it, password included."""
    return url.set(drivername=POSTGRESQL).render_as_string(hide_password=False)
