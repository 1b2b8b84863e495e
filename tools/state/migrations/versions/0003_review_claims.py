"""The approval worklist: review_claims (since when each approval waits, who holds it until when).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_claims",
        sa.Column("thread_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("waiting_since", sa.Double, nullable=False),
        sa.Column("holder_id", sa.Text),
        sa.Column("holder_issuer", sa.Text),
        sa.Column("holder_name", sa.Text),
        sa.Column("claimed_at", sa.Double),
        sa.Column("expires_at", sa.Double),
        sa.PrimaryKeyConstraint("thread_id", "request_id"),
    )


def downgrade() -> None:
    op.drop_table("review_claims")
