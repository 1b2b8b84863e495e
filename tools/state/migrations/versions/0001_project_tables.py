"""The project's tables: jobs, job_leases, approval_decisions, approved_plans, users.

A SQLite state file written before migrations existed already has some or all of them (the
same columns, from the stores' CREATE TABLE IF NOT EXISTS): those are kept with their rows and
only the missing ones are created.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> list[tuple[str, list[sa.SchemaItem]]]:
    # Frozen here, not imported from tools.state.schema: a migration must keep creating what it
    # created when it was written, whatever the schema module says later.
    return [
        ("jobs", [
            sa.Column("thread_id", sa.Text, primary_key=True),
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("label", sa.Text, nullable=False),
            sa.Column("created_at", sa.Text, nullable=False),
            sa.Column("status", sa.Text, nullable=False),
        ]),
        ("job_leases", [
            sa.Column("thread_id", sa.Text, primary_key=True),
            sa.Column("token", sa.Text, nullable=False),
            sa.Column("pid", sa.BigInteger, nullable=False),
            sa.Column("host", sa.Text, nullable=False),
            sa.Column("boot_id", sa.Text),
            sa.Column("pid_started", sa.BigInteger),
            sa.Column("acquired_at", sa.Double, nullable=False),
            sa.Column("heartbeat_at", sa.Double, nullable=False),
        ]),
        ("approval_decisions", [
            sa.Column("thread_id", sa.Text, nullable=False),
            sa.Column("request_id", sa.Text, nullable=False),
            sa.Column("payload_sha256", sa.Text, nullable=False),
            sa.Column("decision", sa.Text, nullable=False),
            sa.PrimaryKeyConstraint("thread_id", "request_id"),
        ]),
        ("approved_plans", [
            sa.Column("request_id", sa.Text, nullable=False),
            sa.Column("plan_sha256", sa.Text, nullable=False),
            sa.PrimaryKeyConstraint("request_id", "plan_sha256"),
        ]),
        ("users", [
            sa.Column("username", sa.Text, primary_key=True),
            sa.Column("display_name", sa.Text, nullable=False),
            sa.Column("roles", sa.Text, nullable=False),
            sa.Column("password_hash", sa.Text, nullable=False),
            sa.Column("disabled", sa.Integer, nullable=False, server_default="0"),
            sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"),
            sa.Column("locked_until", sa.Text),
            sa.Column("created_at", sa.Text, nullable=False),
        ]),
    ]


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, columns in _tables():
        if name not in existing:
            op.create_table(name, *columns)


def downgrade() -> None:
    for name, _columns in reversed(_tables()):
        op.drop_table(name)
