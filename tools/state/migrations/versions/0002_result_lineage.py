"""The input/output audit index: result_outputs and result_inputs.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "result_outputs",
        sa.Column("sop_instance_uid", sa.Text, primary_key=True),
        sa.Column("study_instance_uid", sa.Text, nullable=False),
        sa.Column("series_instance_uid", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("task_id", sa.Text, nullable=False),
        sa.Column("approved_by", sa.Text, nullable=False),
        sa.Column("approved_by_issuer", sa.Text, nullable=False),
        sa.Column("approved_by_name", sa.Text, nullable=False),
        sa.Column("approved_at", sa.Text, nullable=False),
        sa.Column("automatic", sa.Integer, nullable=False),
        sa.Column("stored_at", sa.Text, nullable=False),
        sa.Column("destination", sa.Text, nullable=False),
    )
    op.create_index("ix_result_outputs_study_instance_uid", "result_outputs", ["study_instance_uid"])
    op.create_table(
        "result_inputs",
        sa.Column("output_sop_instance_uid", sa.Text, nullable=False),
        sa.Column("sop_instance_uid", sa.Text, nullable=False),
        sa.Column("series_instance_uid", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("output_sop_instance_uid", "sop_instance_uid"),
    )


def downgrade() -> None:
    op.drop_table("result_inputs")
    op.drop_index("ix_result_outputs_study_instance_uid", "result_outputs")
    op.drop_table("result_outputs")
