"""Alembic's environment: always run from `tools.state.migrate.upgrade` on a connection it opened.

There is no alembic.ini: the URL comes from the caller (the settings, at the top), never from here.
"""

from __future__ import annotations

from alembic import context

from tools.state.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the migrations run through tools.state.migrate.upgrade(engine), which hands Alembic a connection; "
        "the imaging-agent commands and the API service call it on start"
    )
# render_as_batch: SQLite alters a table by copying it, which Alembic's batch mode does for us.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
