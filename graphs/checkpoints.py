"""The checkpoint serializer: a checkpoint revives only the types the graphs' states are declared to hold.

LangGraph's default serializer imports and calls any class a checkpoint names. Whoever can write the
state file (another local account, a restored backup, a copied run directory) could then make the
next `process` or `approvals` run arbitrary code when it resumes a job. Strict msgpack with an
allowlist closes that: the list is found from the state annotations themselves, so a new record type
in a state is allowed by declaring it there, and nothing else is.
"""

from __future__ import annotations

import enum
import sqlite3
import typing
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from pydantic import BaseModel
from sqlalchemy import URL

from tools.state.database import SQLITE, libpq_url


def checkpoint_serializer(state_types: Iterable[type]) -> JsonPlusSerializer:
    """A strict serializer that revives the pydantic models and enums reachable from `state_types`."""
    allowed = sorted(set(_revivable_types(state_types)), key=lambda kind: (kind.__module__, kind.__qualname__))
    return JsonPlusSerializer(allowed_msgpack_modules=allowed)


def _revivable_types(roots: Iterable[Any]) -> Iterator[type]:
    seen: set[int] = set()
    pending = list(roots)
    while pending:
        annotation = pending.pop()
        if id(annotation) in seen:
            continue
        seen.add(id(annotation))
        pending.extend(typing.get_args(annotation))
        if not isinstance(annotation, type):
            continue
        if issubclass(annotation, BaseModel):
            yield annotation
            pending.extend(field.annotation for field in annotation.model_fields.values())
        elif issubclass(annotation, enum.Enum):
            yield annotation
        elif typing.is_typeddict(annotation):
            pending.extend(typing.get_type_hints(annotation, include_extras=True).values())


@contextmanager
def checkpoint_saver(url: URL, serde: JsonPlusSerializer) -> Iterator[BaseCheckpointSaver]:
    """LangGraph's checkpointer in the database `url` names (the engine's: SQLite or PostgreSQL).

    Its tables are LangGraph's own, made and migrated by its `setup()`, which the caller runs under
    the migration lock together with the project's Alembic migrations (`WorkflowRuntime` does), so
    processes starting together on a fresh database do not race. Both savers get the strict serializer."""
    if url.get_backend_name() == SQLITE:
        # LangGraph runs parallel branches in threads; SqliteSaver serialises access to its connection.
        conn = sqlite3.connect(url.database or "", check_same_thread=False, timeout=30)
        try:
            yield SqliteSaver(conn, serde=serde)
        finally:
            conn.close()
        return
    # As langgraph-checkpoint-postgres asks of connections made for it: autocommit (its setup commits
    # its tables), dict rows (it reads columns by name), no server-side prepared statements. A pool,
    # checked before each use, so a restarted server costs a reconnect rather than the process.
    with ConnectionPool(
        libpq_url(url),
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        check=ConnectionPool.check_connection,
        open=True,
    ) as pool:
        yield PostgresSaver(pool, serde=serde)
