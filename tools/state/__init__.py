"""The project's own tables (jobs, leases, decisions, accounts) in SQLite or PostgreSQL, one schema.

`database.state_engine` builds the SQLAlchemy engine from a URL, `schema` declares the tables the
stores use, `migrate.upgrade` brings a database to the newest schema with Alembic
(`migrations/`). See docs/architecture.md, "Durability".
"""
