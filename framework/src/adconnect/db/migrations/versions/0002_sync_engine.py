"""Sync engine: raw schema, quota scopes, schedule fire bookkeeping, richer run records.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from adconnect.db.rls import enable_tenant_rls

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = "adconnect"
TENANT_TABLES_0001 = (
    "users",
    "provider_enablements",
    "connections",
    "tenant_keys",
    "credentials",
    "oauth_states",
    "schedules",
    "sync_runs",
    "stream_states",
    "api_error_log",
)


def upgrade() -> None:
    op.execute(sa.text("CREATE SCHEMA IF NOT EXISTS raw"))
    op.add_column(
        "sync_runs", sa.Column("records_deleted", sa.BigInteger, nullable=False, server_default="0"), schema=S
    )
    op.add_column("sync_runs", sa.Column("job_id", sa.Text), schema=S)
    op.add_column(
        "sync_runs",
        sa.Column("details", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        schema=S,
    )
    op.create_table(
        "quota_scopes",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("blocked_until", sa.DateTime(timezone=True)),
        sa.Column("usage_pct", sa.Float, nullable=False, server_default="0"),
        sa.Column("reason", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S,
    )
    op.create_table(
        "schedule_fires",
        sa.Column(
            "tenant_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey(f"{S}.tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("job_key", sa.Text, nullable=False),
        sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "job_key", name="pk_schedule_fires"),
        schema=S,
    )
    op.create_index("ix_schedule_fires_tenant_id", "schedule_fires", ["tenant_id"], schema=S)
    # every tenant table, old and new, gets the policy whose tenant check runs once per statement
    for table in (*TENANT_TABLES_0001, "schedule_fires"):
        enable_tenant_rls(op.execute, table)


def downgrade() -> None:
    op.drop_table("schedule_fires", schema=S)
    op.drop_table("quota_scopes", schema=S)
    for column in ("details", "job_id", "records_deleted"):
        op.drop_column("sync_runs", column, schema=S)
    op.execute(sa.text("DROP SCHEMA IF EXISTS raw CASCADE"))
