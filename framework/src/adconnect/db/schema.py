"""The core tables, as SQLAlchemy Core metadata (schema ``adconnect``).

The Alembic migrations in ``adconnect/db/migrations`` create and evolve these tables;
``framework/tests/test_migrations.py`` fails when the two disagree.

Two kinds of tables:

* platform tables (``tenants``, ``metric_registry``, ``runner_heartbeats``) hold no tenant data;
* tenant tables carry ``tenant_id`` and have row-level security enabled AND forced: the
  application role sees only the rows of the tenant set for the current transaction
  (``adconnect.tenant_id``), whatever the query says.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

SCHEMA = "adconnect"

metadata = MetaData(
    schema=SCHEMA,
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    },
)


def _ts(name: str, *, nullable: bool = False, default_now: bool = True) -> Column[object]:
    return Column(
        name, DateTime(timezone=True), nullable=nullable, server_default=func.now() if default_now else None
    )


def _uuid_pk() -> Column[object]:
    return Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))


def _tenant_fk() -> Column[object]:
    return Column(
        "tenant_id",
        UUID(as_uuid=True),
        ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )


def _connection_fk(*, nullable: bool = False) -> Column[object]:
    return Column(
        "connection_id",
        UUID(as_uuid=True),
        ForeignKey(f"{SCHEMA}.connections.id", ondelete="CASCADE"),
        nullable=nullable,
        index=True,
    )


# --- platform tables -----------------------------------------------------------------------

tenants = Table(
    "tenants",
    metadata,
    _uuid_pk(),
    Column("slug", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False, unique=True),
    _ts("created_at"),
    CheckConstraint("slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'", name="slug_format"),
)

metric_registry = Table(
    "metric_registry",
    metadata,
    Column("metric_id", Text, primary_key=True),
    Column("provider_id", Text, nullable=False, index=True),
    Column("level", Text, nullable=False),
    Column("unit", Text, nullable=False),
    Column("periods", ARRAY(Text), nullable=False),
    Column("status", Text, nullable=False),
    Column("replacement", Text),
    Column("required_scopes", Text),
    Column("title", Text, nullable=False, server_default=""),
    Column("description", Text, nullable=False, server_default=""),
    Column("is_default", Boolean, nullable=False, server_default=text("false")),
    Column("supports_breakdowns", Boolean, nullable=False, server_default=text("false")),
    Column("status_reason", Text),
    _ts("updated_at"),
    CheckConstraint("status in ('active', 'deprecated', 'invalid', 'unknown')", name="status"),
)

runner_heartbeats = Table(
    "runner_heartbeats",
    metadata,
    Column("instance_id", Text, primary_key=True),
    Column("hostname", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", Text, nullable=False),
    _ts("started_at"),
    _ts("last_seen_at"),
)

quota_scopes = Table(
    "quota_scopes",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("blocked_until", DateTime(timezone=True)),
    Column("usage_pct", Float, nullable=False, server_default="0"),
    Column("reason", Text),
    _ts("updated_at"),
)

# --- tenant tables -------------------------------------------------------------------------

users = Table(
    "users",
    metadata,
    _uuid_pk(),
    _tenant_fk(),
    Column("email", Text, nullable=False),
    Column("display_name", Text, nullable=False, server_default=""),
    Column("role", Text, nullable=False, server_default="viewer"),
    _ts("created_at"),
    UniqueConstraint("tenant_id", "email"),
    CheckConstraint("role in ('admin', 'analyst', 'viewer')", name="role"),
)

provider_enablements = Table(
    "provider_enablements",
    metadata,
    _tenant_fk(),
    Column("provider_id", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    _ts("changed_at"),
    Column("changed_by", Text, nullable=False, server_default="cli"),
    PrimaryKeyConstraint("tenant_id", "provider_id"),
)

connections = Table(
    "connections",
    metadata,
    _uuid_pk(),
    _tenant_fk(),
    Column("provider_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("external_account_id", Text),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("status_reason", Text),
    Column("credential_status", Text),
    Column("identity", Text),
    Column("granted_scopes", ARRAY(Text), nullable=False, server_default="{}"),
    Column("declined_scopes", ARRAY(Text), nullable=False, server_default="{}"),
    Column("token_expires_at", DateTime(timezone=True)),
    Column("last_validated_at", DateTime(timezone=True)),
    Column("options", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    _ts("created_at"),
    _ts("updated_at"),
    UniqueConstraint("tenant_id", "provider_id", "name"),
    CheckConstraint(
        "status in ('pending', 'active', 'needs_reauth', 'paused', 'disconnected')", name="status"
    ),
)

tenant_keys = Table(
    "tenant_keys",
    metadata,
    _tenant_fk(),
    Column("version", Integer, nullable=False),
    Column("master_key_id", Text, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("state", Text, nullable=False, server_default="active"),
    _ts("created_at"),
    PrimaryKeyConstraint("tenant_id", "version"),
    CheckConstraint("state in ('active', 'retiring')", name="state"),
)

credentials = Table(
    "credentials",
    metadata,
    _tenant_fk(),
    _connection_fk(),
    Column("field", Text, nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    _ts("updated_at"),
    PrimaryKeyConstraint("connection_id", "field"),
    ForeignKeyConstraint(
        ["tenant_id", "key_version"], [f"{SCHEMA}.tenant_keys.tenant_id", f"{SCHEMA}.tenant_keys.version"]
    ),
)

oauth_states = Table(
    "oauth_states",
    metadata,
    Column("nonce", Text, primary_key=True),
    _tenant_fk(),
    Column("provider_id", Text, nullable=False),
    Column("flow", Text, nullable=False),
    Column("user_id", Text),
    Column("redirect_uri", Text, nullable=False),
    _ts("created_at"),
    _ts("expires_at", default_now=False),
    _ts("consumed_at", nullable=True, default_now=False),
)

schedules = Table(
    "schedules",
    metadata,
    _uuid_pk(),
    _tenant_fk(),
    _connection_fk(nullable=True),
    Column("provider_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("cron", Text, nullable=False),
    Column("timezone", Text, nullable=False, server_default="America/Jamaica"),
    Column("streams", ARRAY(Text)),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    _ts("updated_at"),
    UniqueConstraint("tenant_id", "provider_id", "connection_id", "name", postgresql_nulls_not_distinct=True),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    _uuid_pk(),
    _tenant_fk(),
    _connection_fk(),
    Column("provider_id", Text, nullable=False),
    Column("stream", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("trigger", Text, nullable=False, server_default="manual"),
    Column("window_start", DateTime(timezone=True)),
    Column("window_end", DateTime(timezone=True)),
    _ts("started_at"),
    Column("finished_at", DateTime(timezone=True)),
    Column("records_read", BigInteger, nullable=False, server_default="0"),
    Column("records_inserted", BigInteger, nullable=False, server_default="0"),
    Column("records_updated", BigInteger, nullable=False, server_default="0"),
    Column("records_skipped", BigInteger, nullable=False, server_default="0"),
    Column("api_calls", Integer, nullable=False, server_default="0"),
    Column("rate_limit_wait_seconds", Float, nullable=False, server_default="0"),
    Column("error_class", Text),
    Column("error_message", Text),
    Column("records_deleted", BigInteger, nullable=False, server_default="0"),
    Column("job_id", Text),
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    CheckConstraint(
        "status in ('queued', 'running', 'succeeded', 'failed', 'partial', 'cancelled')", name="status"
    ),
    Index(None, "tenant_id", "started_at"),
)

stream_states = Table(
    "stream_states",
    metadata,
    _tenant_fk(),
    _connection_fk(),
    Column("stream", Text, nullable=False),
    Column("state", JSONB, nullable=False),
    _ts("updated_at"),
    PrimaryKeyConstraint("connection_id", "stream"),
)

api_error_log = Table(
    "api_error_log",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _tenant_fk(),
    Column("provider_id", Text, nullable=False),
    Column("connection_id", UUID(as_uuid=True), ForeignKey(f"{SCHEMA}.connections.id", ondelete="SET NULL")),
    Column("run_id", UUID(as_uuid=True)),
    Column("endpoint", Text),
    Column("account_id", Text),
    Column("status_code", Integer),
    Column("error_code", Text),
    Column("error_subcode", Text),
    Column("message", Text, nullable=False),
    Column("retryable", Boolean, nullable=False),
    Column("correlation_id", Text),
    _ts("created_at"),
    Index(None, "tenant_id", "created_at"),
)

schedule_fires = Table(
    "schedule_fires",
    metadata,
    _tenant_fk(),
    Column("job_key", Text, nullable=False),
    Column("last_fired_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant_id", "job_key"),
)

#: Schema of the raw tables the sync engine creates from stream record models.
RAW_SCHEMA = "raw"

#: Tables whose rows belong to one tenant; each has RLS enabled and forced.
TENANT_TABLES: tuple[Table, ...] = tuple(t for t in metadata.sorted_tables if "tenant_id" in t.c)
PLATFORM_TABLES: tuple[Table, ...] = tuple(t for t in metadata.sorted_tables if "tenant_id" not in t.c)
