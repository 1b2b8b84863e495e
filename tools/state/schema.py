"""The project's own tables, as the stores read and write them.

The migrations in `migrations/versions` create them; a test (tests/unit/test_state_migrations.py)
checks that a database at the newest revision matches these declarations exactly. Column types
keep what the hand-written SQLite statements used (text timestamps, integer flags), so a state
file written before migrations existed is adopted as it is.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Double, Integer, MetaData, PrimaryKeyConstraint, Table, Text

metadata = MetaData()

# One row per job (a LangGraph thread): graphs/runtime.py over tools/workflow/jobs.py.
jobs = Table(
    "jobs",
    metadata,
    Column("thread_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("created_at", Text, nullable=False),  # ISO 8601, UTC: sorts as it reads
    Column("status", Text, nullable=False),
)

# Who runs a job now (tools/workflow/leases.py). pid_started is clock ticks since boot: past
# 2**31 after some months of uptime, hence 64 bits.
job_leases = Table(
    "job_leases",
    metadata,
    Column("thread_id", Text, primary_key=True),
    Column("token", Text, nullable=False),
    Column("pid", BigInteger, nullable=False),
    Column("host", Text, nullable=False),
    Column("boot_id", Text),
    Column("pid_started", BigInteger),
    Column("acquired_at", Double, nullable=False),  # seconds since the epoch
    Column("heartbeat_at", Double, nullable=False),
)

# Approval decisions, recorded before the graph is resumed with them (tools/workflow/decisions.py).
approval_decisions = Table(
    "approval_decisions",
    metadata,
    Column("thread_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("payload_sha256", Text, nullable=False),
    Column("decision", Text, nullable=False),  # ApprovalDecision as JSON
    PrimaryKeyConstraint("thread_id", "request_id"),
)

approved_plans = Table(
    "approved_plans",
    metadata,
    Column("request_id", Text, nullable=False),
    Column("plan_sha256", Text, nullable=False),
    PrimaryKeyConstraint("request_id", "plan_sha256"),
)

# Local accounts (tools/identity/accounts.py): argon2id hashes only.
users = Table(
    "users",
    metadata,
    Column("username", Text, primary_key=True),
    Column("display_name", Text, nullable=False),
    Column("roles", Text, nullable=False),  # comma-separated
    Column("password_hash", Text, nullable=False),
    Column("disabled", Integer, nullable=False, server_default="0"),
    Column("failed_attempts", Integer, nullable=False, server_default="0"),
    Column("locked_until", Text),  # ISO 8601, UTC
    Column("created_at", Text, nullable=False),
)

# The input/output audit index (tools/workflow/lineage.py): which received instances produced which
# stored result, who approved it and where it went. One row per result object...
result_outputs = Table(
    "result_outputs",
    metadata,
    Column("sop_instance_uid", Text, primary_key=True),
    Column("study_instance_uid", Text, nullable=False, index=True),
    Column("series_instance_uid", Text, nullable=False),
    Column("kind", Text, nullable=False),  # RTSTRUCT, SEG, SR
    Column("sha256", Text, nullable=False),  # of the approved file
    Column("task_id", Text, nullable=False),
    Column("approved_by", Text, nullable=False),  # the principal's id
    Column("approved_by_issuer", Text, nullable=False),
    Column("approved_by_name", Text, nullable=False),
    Column("approved_at", Text, nullable=False),  # ISO 8601, UTC
    Column("automatic", Integer, nullable=False),  # 1: `--yes`, nobody reviewed
    Column("stored_at", Text, nullable=False),
    Column("destination", Text, nullable=False),  # the PACS, as the result store names it
)

# ...and one per (result, source instance) it was derived from.
result_inputs = Table(
    "result_inputs",
    metadata,
    Column("output_sop_instance_uid", Text, nullable=False),
    Column("sop_instance_uid", Text, nullable=False),
    Column("series_instance_uid", Text, nullable=False),
    Column("sha256", Text, nullable=False),  # of the instance as the agent kept it after retrieval
    PrimaryKeyConstraint("output_sop_instance_uid", "sop_instance_uid"),
)

# The approval worklist (tools/workflow/claims.py): one row per pending approval, keyed like its
# decision (job, result UID): since when it waits, and which reviewer holds it until when (the
# holder columns empty while nobody does). The row goes when the decision is recorded.
review_claims = Table(
    "review_claims",
    metadata,
    Column("thread_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("waiting_since", Double, nullable=False),  # seconds since the epoch
    Column("holder_id", Text),  # the principal's id at its issuer
    Column("holder_issuer", Text),
    Column("holder_name", Text),
    Column("claimed_at", Double),
    Column("expires_at", Double),
    PrimaryKeyConstraint("thread_id", "request_id"),
)
