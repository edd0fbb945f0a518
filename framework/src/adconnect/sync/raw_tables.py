"""Raw tables: one per provider stream, ``raw.<provider_id>__<stream>``, made from the record model.

Naming: the provider id and stream name are both permanent snake_case identifiers, so
``<provider>__<stream>`` is unique, readable in SQL and in dbt sources (``source('raw',
'meta_marketing__insights')``), and needs no quoting.

Shape: ``tenant_id`` and ``connection_id`` (who the row belongs to), one column per record-model
field, and ``_synced_at`` (when the row was last written). The primary key is ``(tenant_id,
<stream primary key>)``, with the cursor column right after ``tenant_id`` when it is part of
the key, so a re-read window is one index range; a cursor outside the key gets its own index.
Row-level security is enabled and forced, as on every tenant table.

Evolution is additive: a new field becomes a new (nullable) column. A field whose type
changed, or a changed primary key, fails with :class:`SchemaChangeError` instead of a silent
cast: that needs a deliberate migration.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import hashlib
import threading
import types
import typing
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, text

from adconnect.db.database import Database
from adconnect.db.rls import enable_tenant_rls
from adconnect.db.schema import RAW_SCHEMA
from adconnect.errors import ConfigurationError, PluginContractError
from adconnect.models import StreamSpec

__all__ = ["RawColumn", "RawTable", "SchemaChangeError", "ensure_raw_table", "quote_ident"]

#: Columns every raw table has besides the record's own.
FRAMEWORK_COLUMNS = ("tenant_id", "connection_id", "_synced_at")

_SCALARS: dict[type, str] = {
    bool: "boolean",  # before int: bool is an int
    int: "bigint",
    float: "double precision",
    decimal.Decimal: "numeric",
    str: "text",
    dt.datetime: "timestamp with time zone",
    dt.date: "date",
    dt.time: "time without time zone",
    uuid.UUID: "uuid",
    bytes: "bytea",
}


class SchemaChangeError(ConfigurationError):
    """A stream's record model changed incompatibly with its raw table."""

    code = "raw_schema_change"


@dataclass(frozen=True)
class RawColumn:
    name: str
    pg_type: str
    nullable: bool = True

    @property
    def is_json(self) -> bool:
        return self.pg_type == "jsonb"


@dataclass(frozen=True)
class RawTable:
    """The raw table of one provider stream."""

    provider_id: str
    stream: str
    key: tuple[str, ...]  # tenant_id + the stream's primary key
    cursor: str | None
    columns: tuple[RawColumn, ...]  # tenant_id, connection_id, record fields (not _synced_at)

    @property
    def name(self) -> str:
        return f"{self.provider_id}__{self.stream}"

    @property
    def qualified(self) -> str:
        return f'{RAW_SCHEMA}."{self.name}"'

    @property
    def record_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns[2:])

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> RawColumn:
        return next(c for c in self.columns if c.name == name)

    @property
    def signature(self) -> str:
        """Changes whenever the table shape changes (used to cache 'already ensured')."""
        body = "|".join(f"{c.name}:{c.pg_type}:{c.nullable}" for c in self.columns)
        return hashlib.sha256(f"{self.key}|{self.cursor}|{body}".encode()).hexdigest()[:16]

    @classmethod
    def from_spec(cls, provider_id: str, spec: StreamSpec) -> RawTable:
        clash = set(spec.record_model.model_fields) & set(FRAMEWORK_COLUMNS)
        if clash:
            raise PluginContractError(
                f"{provider_id}.{spec.name}: record fields {sorted(clash)} clash with raw-table columns",
                provider_id=provider_id,
            )
        columns = [RawColumn("tenant_id", "uuid", False), RawColumn("connection_id", "uuid", False)]
        for name, field in spec.record_model.model_fields.items():
            pg_type, optional = _pg_type(field.annotation, f"{provider_id}.{spec.name}.{name}")
            in_key = name in spec.primary_key
            if in_key and optional:
                raise PluginContractError(
                    f"{provider_id}.{spec.name}: primary-key field {name!r} may be None",
                    provider_id=provider_id,
                )
            columns.append(RawColumn(name, pg_type, nullable=not in_key))
        key: tuple[str, ...] = ("tenant_id", *spec.primary_key)
        if spec.cursor_field in spec.primary_key:  # window scans then use the primary key
            rest = tuple(k for k in spec.primary_key if k != spec.cursor_field)
            key = ("tenant_id", spec.cursor_field, *rest)
        return cls(provider_id, spec.name, key, spec.cursor_field, tuple(columns))


def _pg_type(annotation: Any, where: str) -> tuple[str, bool]:
    """PostgreSQL type for a pydantic field annotation, and whether it admits None."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _pg_type(typing.get_args(annotation)[0], where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return _pg_type(args[0], where)[0], optional
        return "jsonb", optional
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        kinds = {type(v) for v in values}
        return (_SCALARS.get(kinds.pop(), "jsonb") if len(kinds) == 1 else "jsonb"), optional
    if origin in (list, dict, tuple, set, frozenset) or annotation in (list, dict, tuple, Any):
        return "jsonb", optional
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "jsonb", optional
        if issubclass(annotation, enum.Enum):
            base = str if issubclass(annotation, str) else int if issubclass(annotation, int) else None
            if base is None:
                raise PluginContractError(f"{where}: enum {annotation.__name__} is neither str nor int")
            return _SCALARS[base], optional
        for kind, pg in _SCALARS.items():
            if issubclass(annotation, kind):
                return pg, optional
    raise PluginContractError(f"{where}: no PostgreSQL type for {annotation!r}")


_ensured: dict[str, str] = {}
_ensured_lock = threading.Lock()


def ensure_raw_table(db: Database, table: RawTable) -> None:
    """Create the raw table or evolve it additively (as the admin role). Idempotent and cached."""
    if _ensured.get(f"{db.admin_url}|{table.qualified}") == table.signature:
        return
    with db.admin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": table.qualified})
        existing = _existing_columns(conn, table)
        if not existing:
            _create(conn, table, db.app_role, db.loader_role)
        else:
            _evolve(conn, table, existing)
    with _ensured_lock:
        _ensured[f"{db.admin_url}|{table.qualified}"] = table.signature


def _existing_columns(conn: Connection, table: RawTable) -> dict[str, str]:
    rows = conn.execute(
        text(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname = :t AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        {"s": RAW_SCHEMA, "t": table.name},
    ).all()
    return {name: pg_type for name, pg_type in rows}


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL."""
    return '"' + name.replace('"', '""') + '"'


def _create(conn: Connection, table: RawTable, app_role: str, loader_role: str | None) -> None:
    columns = [f"{quote_ident(c.name)} {c.pg_type}{'' if c.nullable else ' NOT NULL'}" for c in table.columns]
    columns.append("_synced_at timestamp with time zone NOT NULL DEFAULT now()")
    key = ", ".join(quote_ident(k) for k in table.key)
    conn.execute(
        text(
            f"CREATE TABLE {table.qualified} ({', '.join(columns)}, "
            f'CONSTRAINT "pk_{table.name}" PRIMARY KEY ({key}))'
        )
    )
    if table.cursor is not None and table.cursor not in table.key:
        conn.execute(
            text(
                f'CREATE INDEX "ix_{table.name}_window" ON {table.qualified} '
                f"(tenant_id, {quote_ident(table.cursor)})"
            )
        )
    enable_tenant_rls(conn.execute, table.name, schema=RAW_SCHEMA)
    conn.execute(
        text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table.qualified} TO {quote_ident(app_role)}")
    )
    if loader_role is not None:
        conn.execute(text(f"GRANT INSERT ON {table.qualified} TO {quote_ident(loader_role)}"))


def _evolve(conn: Connection, table: RawTable, existing: dict[str, str]) -> None:
    for column in table.columns:
        found = existing.get(column.name)
        if found is None:
            conn.execute(
                text(f"ALTER TABLE {table.qualified} ADD COLUMN {quote_ident(column.name)} {column.pg_type}")
            )
        elif found != column.pg_type:
            raise SchemaChangeError(
                f"{table.qualified}.{column.name} is {found} but stream {table.provider_id}.{table.stream} "
                f"now declares {column.pg_type}",
                hint="a type change needs a deliberate migration: add a new field instead, or back up and "
                "drop the raw table so it is recreated",
                provider_id=table.provider_id,
            )
    key = conn.execute(
        text(
            "SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
            "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = CAST(:t AS regclass) AND i.indisprimary"
        ),
        {"t": table.qualified},
    ).scalar_one()
    if tuple(key or ()) != table.key:
        raise SchemaChangeError(
            f"{table.qualified} has primary key {tuple(key or ())}, the stream now declares {table.key}",
            hint="a key change needs a deliberate migration of the raw table",
            provider_id=table.provider_id,
        )
