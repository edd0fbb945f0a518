"""Core tables: tenants, users, enablement, connections, vault, OAuth state, runs, state, errors.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from adconnect.db.rls import CURRENT_TENANT_FUNCTION, enable_tenant_rls

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S = "adconnect"
TENANT_TABLES = (
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


def _ts(name: str, *, nullable: bool = False, now: bool = True) -> sa.Column:
    return sa.Column(
        name, sa.DateTime(timezone=True), nullable=nullable, server_default=sa.func.now() if now else None
    )


def _tenant() -> sa.Column:
    return sa.Column(
        "tenant_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey(f"{S}.tenants.id", ondelete="CASCADE", name=None),
        nullable=False,
    )


def _connection(nullable: bool = False) -> sa.Column:
    return sa.Column(
        "connection_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey(f"{S}.connections.id", ondelete="CASCADE"),
        nullable=nullable,
    )


def _id() -> sa.Column:
    return sa.Column(
        "id", pg.UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")
    )


def upgrade() -> None:
    op.execute(sa.text(CURRENT_TENANT_FUNCTION))

    op.create_table(
        "tenants",
        _id(),
        sa.Column("slug", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        _ts("created_at"),
        sa.UniqueConstraint("slug", name="uq_tenants_slug"),
        sa.UniqueConstraint("name", name="uq_tenants_name"),
        sa.CheckConstraint("slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'", name="ck_tenants_slug_format"),
        schema=S,
    )
    op.create_table(
        "metric_registry",
        sa.Column("metric_id", sa.Text, primary_key=True),
        sa.Column("provider_id", sa.Text, nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("unit", sa.Text, nullable=False),
        sa.Column("periods", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("replacement", sa.Text),
        sa.Column("required_scopes", sa.Text),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("supports_breakdowns", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("status_reason", sa.Text),
        _ts("updated_at"),
        sa.CheckConstraint(
            "status in ('active', 'deprecated', 'invalid', 'unknown')", name="ck_metric_registry_status"
        ),
        schema=S,
    )
    op.create_index("ix_metric_registry_provider_id", "metric_registry", ["provider_id"], schema=S)
    op.create_table(
        "runner_heartbeats",
        sa.Column("instance_id", sa.Text, primary_key=True),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        _ts("started_at"),
        _ts("last_seen_at"),
        schema=S,
    )
    op.create_table(
        "users",
        _id(),
        _tenant(),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("display_name", sa.Text, nullable=False, server_default=""),
        sa.Column("role", sa.Text, nullable=False, server_default="viewer"),
        _ts("created_at"),
        sa.UniqueConstraint("tenant_id", "email", name="uq_users_tenant_id_email"),
        sa.CheckConstraint("role in ('admin', 'analyst', 'viewer')", name="ck_users_role"),
        schema=S,
    )
    op.create_table(
        "provider_enablements",
        _tenant(),
        sa.Column("provider_id", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        _ts("changed_at"),
        sa.Column("changed_by", sa.Text, nullable=False, server_default="cli"),
        sa.PrimaryKeyConstraint("tenant_id", "provider_id", name="pk_provider_enablements"),
        schema=S,
    )
    op.create_table(
        "connections",
        _id(),
        _tenant(),
        sa.Column("provider_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("external_account_id", sa.Text),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("status_reason", sa.Text),
        sa.Column("credential_status", sa.Text),
        sa.Column("identity", sa.Text),
        sa.Column("granted_scopes", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("declined_scopes", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("token_expires_at", sa.DateTime(timezone=True)),
        sa.Column("last_validated_at", sa.DateTime(timezone=True)),
        sa.Column("options", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint(
            "tenant_id", "provider_id", "name", name="uq_connections_tenant_id_provider_id_name"
        ),
        sa.CheckConstraint(
            "status in ('pending', 'active', 'needs_reauth', 'paused', 'disconnected')",
            name="ck_connections_status",
        ),
        schema=S,
    )
    op.create_table(
        "tenant_keys",
        _tenant(),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("master_key_id", sa.Text, nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="active"),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("tenant_id", "version", name="pk_tenant_keys"),
        sa.CheckConstraint("state in ('active', 'retiring')", name="ck_tenant_keys_state"),
        schema=S,
    )
    op.create_table(
        "credentials",
        _tenant(),
        _connection(),
        sa.Column("field", sa.Text, nullable=False),
        sa.Column("key_version", sa.Integer, nullable=False),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("connection_id", "field", name="pk_credentials"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "key_version"],
            [f"{S}.tenant_keys.tenant_id", f"{S}.tenant_keys.version"],
            name="fk_credentials_tenant_id_tenant_keys",
        ),
        schema=S,
    )
    op.create_table(
        "oauth_states",
        sa.Column("nonce", sa.Text, primary_key=True),
        _tenant(),
        sa.Column("provider_id", sa.Text, nullable=False),
        sa.Column("flow", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        _ts("created_at"),
        _ts("expires_at", now=False),
        _ts("consumed_at", nullable=True, now=False),
        schema=S,
    )
    op.create_table(
        "schedules",
        _id(),
        _tenant(),
        _connection(nullable=True),
        sa.Column("provider_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("cron", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False, server_default="America/Jamaica"),
        sa.Column("streams", pg.ARRAY(sa.Text)),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.text("true")),
        _ts("updated_at"),
        sa.UniqueConstraint(
            "tenant_id",
            "provider_id",
            "connection_id",
            "name",
            name="uq_schedules_tenant_id_provider_id_connection_id_name",
            postgresql_nulls_not_distinct=True,
        ),
        schema=S,
    )
    op.create_table(
        "sync_runs",
        _id(),
        _tenant(),
        _connection(),
        sa.Column("provider_id", sa.Text, nullable=False),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("trigger", sa.Text, nullable=False, server_default="manual"),
        sa.Column("window_start", sa.DateTime(timezone=True)),
        sa.Column("window_end", sa.DateTime(timezone=True)),
        _ts("started_at"),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("records_read", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("records_inserted", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("records_updated", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("records_skipped", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("api_calls", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rate_limit_wait_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("error_class", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.CheckConstraint(
            "status in ('queued', 'running', 'succeeded', 'failed', 'partial', 'cancelled')",
            name="ck_sync_runs_status",
        ),
        schema=S,
    )
    op.create_index("ix_sync_runs_tenant_id_started_at", "sync_runs", ["tenant_id", "started_at"], schema=S)
    op.create_table(
        "stream_states",
        _tenant(),
        _connection(),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("state", pg.JSONB, nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("connection_id", "stream", name="pk_stream_states"),
        schema=S,
    )
    op.create_table(
        "api_error_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        _tenant(),
        sa.Column("provider_id", sa.Text, nullable=False),
        sa.Column(
            "connection_id", pg.UUID(as_uuid=True), sa.ForeignKey(f"{S}.connections.id", ondelete="SET NULL")
        ),
        sa.Column("run_id", pg.UUID(as_uuid=True)),
        sa.Column("endpoint", sa.Text),
        sa.Column("account_id", sa.Text),
        sa.Column("status_code", sa.Integer),
        sa.Column("error_code", sa.Text),
        sa.Column("error_subcode", sa.Text),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("retryable", sa.Boolean, nullable=False),
        sa.Column("correlation_id", sa.Text),
        _ts("created_at"),
        schema=S,
    )
    op.create_index(
        "ix_api_error_log_tenant_id_created_at", "api_error_log", ["tenant_id", "created_at"], schema=S
    )

    for table in TENANT_TABLES:
        op.create_index(f"ix_{table}_tenant_id", table, ["tenant_id"], schema=S)
        enable_tenant_rls(op.execute, table)
    for table in ("credentials", "schedules", "sync_runs", "stream_states"):
        op.create_index(f"ix_{table}_connection_id", table, ["connection_id"], schema=S)


def downgrade() -> None:
    for table in reversed(
        (
            "tenants",
            "metric_registry",
            "runner_heartbeats",
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
    ):
        op.drop_table(table, schema=S)
    op.execute(sa.text(f"DROP FUNCTION IF EXISTS {S}.current_tenant()"))
