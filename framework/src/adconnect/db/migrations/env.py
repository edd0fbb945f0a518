"""Alembic environment: runs on the connection adconnect hands over (never reads alembic.ini)."""

from __future__ import annotations

from alembic import context

from adconnect.db.schema import SCHEMA, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table_schema=SCHEMA,
    include_schemas=True,
    include_name=lambda name, type_, parent: type_ != "schema" or name == SCHEMA,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
