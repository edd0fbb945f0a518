"""The raw-table loader: COPY, never row-by-row INSERTs, inside the caller's transaction.

Two strategies, chosen by measurement (``bench/sync_load.py`` has the figures):

* **copy** (streams with a cursor, when the database has the loader role): delete the
  connection's rows inside the re-read window, then ``COPY`` the new rows straight into the raw
  table. PostgreSQL refuses ``COPY FROM`` into a table with row-level security for a role
  subject to it, so the ``COPY`` alone runs as the loader role (BYPASSRLS, INSERT-only on raw
  tables; see :mod:`adconnect.db.roles`); the rows' ``tenant_id`` is the transaction's tenant,
  checked before the switch. Rows outside the window are set aside and upserted afterwards.
  A provider repeating a key inside one window makes the COPY fail with
  :class:`DuplicateKeysError`; the engine then re-reads that chunk with the stage strategy.
* **stage** (snapshot streams, databases without the loader role, and that fallback): ``COPY``
  into an unindexed temporary table, then move rows with set-based SQL under row-level
  security. A fresh scope is moved with ``INSERT ... SELECT`` every ``flush_rows`` rows; a
  re-read scope keeps unchanged rows, replaces changed ones and drops vanished ones; repeated
  keys are upserted keeping the last copy.

The loader never commits: the engine commits the rows and the stream state together.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.errors import UniqueViolation
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from adconnect.sync import crashpoints
from adconnect.sync.raw_tables import RawTable, quote_ident

__all__ = ["ChunkLoader", "DuplicateKeysError", "LoadCounts", "Window", "bounds", "delete_outside"]

Window = tuple[dt.datetime, dt.datetime]
Row = tuple[Any, ...]
STAGE = "pg_temp._adconnect_stage"


@dataclass
class LoadCounts:
    """What one chunk did to its raw table (``updated`` counts rewritten existing keys)."""

    written: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0

    def add(self, other: LoadCounts) -> None:
        for name in ("written", "inserted", "updated", "deleted", "unchanged"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class DuplicateKeysError(Exception):
    """The provider sent one key twice inside a window; load the chunk with ``strategy='stage'``."""


class ChunkLoader:
    """Loads one window of one stream for one connection, inside an open tenant transaction.

    ``window=None`` means the whole connection (snapshot streams without a cursor).
    ``loader_role`` enables the copy strategy (see the module docstring).
    """

    def __init__(
        self,
        conn: Connection,
        table: RawTable,
        *,
        tenant_id: UUID,
        connection_id: UUID,
        window: Window | None,
        loader_role: str | None = None,
        strategy: str | None = None,
        flush_rows: int = 50_000,
        work_mem: str = "128MB",
    ) -> None:
        self.conn = conn
        self.table = table
        self.prefix = (tenant_id, connection_id)
        self.window = window if table.cursor is not None else None
        self.loader_role = loader_role
        if strategy == "copy" and not (loader_role and self.window is not None):
            raise ValueError("the copy strategy needs the loader role and a windowed stream")
        self.strategy = strategy  # None: decided in begin()
        self._outside: list[Row] = []
        self.flush_rows = flush_rows
        self.work_mem = work_mem
        self.counts = LoadCounts()
        self.fresh = False
        self._copy_cm: Any = None
        self._copy: Any = None
        self._staged = 0
        self._cursor_index = table.record_columns.index(table.cursor) if table.cursor else -1
        records = table.record_columns
        self._names = ", ".join(quote_ident(n) for n in table.column_names)
        self._staged_names = ", ".join(quote_ident(n) for n in records)
        self._select = f":tenant, :connection, {self._staged_names}"
        self._keys = ", ".join(quote_ident(k) for k in table.key)
        record_key = [k for k in table.key if k != "tenant_id"]
        self._values = [n for n in records if n not in table.key]
        self._match = " AND ".join(f"s.{quote_ident(k)} = t.{quote_ident(k)}" for k in record_key)
        self._same = " AND ".join(
            ["t.connection_id = :connection"]
            + [f"s.{quote_ident(v)} IS NOT DISTINCT FROM t.{quote_ident(v)}" for v in self._values]
        )

    # --- lifecycle -------------------------------------------------------------------------

    def begin(self) -> None:
        """Pick the strategy (copy for an empty window when possible), then prepare it."""
        where, params = self._scope("t")
        existing = self.conn.execute(
            text(f"SELECT 1 FROM {self.table.qualified} AS t WHERE {where} LIMIT 1"), params
        ).first()
        self.fresh = existing is None
        if self.strategy is None:
            copy = self.fresh and self.loader_role is not None and self.window is not None
            self.strategy = "copy" if copy else "stage"
        if self.strategy == "copy":
            current = self.conn.execute(text("SELECT adconnect.current_tenant()")).scalar()
            if current != self.prefix[0]:
                raise RuntimeError("the transaction is not scoped to the tenant being loaded")
            if existing is not None:
                self.counts.deleted = self.conn.execute(
                    text(f"DELETE FROM {self.table.qualified} AS t WHERE {where}"), params
                ).rowcount
            self._open_copy()
            return
        self.conn.execute(text(f"DROP TABLE IF EXISTS {STAGE}"))
        self.conn.execute(
            text(
                f"CREATE TEMP TABLE _adconnect_stage ON COMMIT DROP AS "
                f"SELECT {self._staged_names} FROM {self.table.qualified} WITH NO DATA"
            )
        )

    def write(self, rows: Iterable[Row]) -> int:
        """Stage record tuples (record-column order); returns how many were staged."""
        if self._copy is None:
            self._open_copy()
        if crashpoints.armed("mid_copy"):  # tests only: die with some of this batch sent
            rows = list(rows)
            first = self._write_rows(rows[: len(rows) // 2])
            crashpoints.hit("mid_copy")
            return first + self._write_rows(rows[len(rows) // 2 :])
        return self._write_rows(rows)

    def _write_rows(self, rows: Iterable[Row]) -> int:
        copy, written = self._copy, 0
        if self.strategy == "copy":
            prefix, outside, index = self.prefix, self._outside, self._cursor_index
            low, high = bounds(self.table, self.window)  # type: ignore[arg-type]
            for row in rows:
                if low <= row[index] < high:
                    copy.write_row(prefix + row)
                    written += 1
                else:
                    outside.append(row)
            self.counts.written += written
            return written
        for row in rows:
            copy.write_row(row)
            written += 1
        self.counts.written += written
        self._staged += written
        if self.fresh and self._staged >= self.flush_rows:
            self._flush_fresh()
        return written

    def finish(self) -> LoadCounts:
        """Close COPY and settle: copy counts (and stray rows), or move everything staged."""
        if self.strategy == "copy":
            self._close_copy()
            replaced = min(self.counts.deleted, self.counts.written)
            self.counts.updated, self.counts.inserted = replaced, self.counts.written - replaced
            self.counts.deleted -= replaced
            if self._outside:  # rows the provider sent outside the window: upsert them
                extra = ChunkLoader(
                    self.conn,
                    self.table,
                    tenant_id=self.prefix[0],
                    connection_id=self.prefix[1],
                    window=None,
                    strategy="stage",
                )
                extra.begin()
                extra.write(self._outside)
                extra.fresh = False
                extra._close_copy()
                written = extra.counts.written
                inserted = extra._insert(f"SELECT {extra._select} FROM {STAGE}", upsert=True)
                self.counts.inserted += inserted
                self.counts.unchanged += written - inserted
                self.conn.execute(text(f"DROP TABLE IF EXISTS {STAGE}"))
            return self.counts
        self._close_copy()
        if self.fresh:
            self._flush_fresh()
        else:
            self._reconcile()
        self.conn.execute(text(f"DROP TABLE IF EXISTS {STAGE}"))
        return self.counts

    def abort(self) -> None:
        """Abandon an open COPY after an error (the caller rolls the transaction back)."""
        if self._copy_cm is not None:
            cm, self._copy_cm, self._copy = self._copy_cm, None, None
            with contextlib.suppress(Exception):  # the transaction is being rolled back anyway
                cm.__exit__(RuntimeError, RuntimeError("aborted"), None)

    # --- COPY ------------------------------------------------------------------------------

    def _open_copy(self) -> None:
        raw = self.conn.connection.driver_connection
        cursor = raw.cursor()  # type: ignore[union-attr]
        if self.strategy == "copy":
            cursor.execute(f"SET LOCAL ROLE {quote_ident(self.loader_role or '')}")
            target, names, columns = self.table.qualified, self._names, self.table.columns
        else:
            target, names, columns = STAGE, self._staged_names, self.table.columns[2:]
        self._copy_cm = cursor.copy(f"COPY {target} ({names}) FROM STDIN (FORMAT BINARY)")
        self._copy = self._copy_cm.__enter__()
        self._copy.set_types([c.pg_type for c in columns])

    def _close_copy(self) -> None:
        if self._copy_cm is None:
            return
        cm, self._copy_cm, self._copy = self._copy_cm, None, None
        try:
            cm.__exit__(None, None, None)
        except UniqueViolation as exc:  # the transaction is aborted; the engine retries with "stage"
            raise DuplicateKeysError(f"{self.table.qualified}: a key repeats inside the window") from exc
        if self.strategy == "copy":
            self.conn.execute(text("RESET ROLE"))

    # --- moving staged rows ----------------------------------------------------------------

    def _scope(self, alias: str) -> tuple[str, dict[str, Any]]:
        params: dict[str, Any] = {"tenant": self.prefix[0], "connection": self.prefix[1]}
        where = f"{alias}.tenant_id = :tenant AND {alias}.connection_id = :connection"
        if self.window is not None and self.table.cursor is not None:
            cursor = quote_ident(self.table.cursor)
            where += f" AND {alias}.{cursor} >= :low AND {alias}.{cursor} < :high"
            params["low"], params["high"] = bounds(self.table, self.window)
        return where, params

    def _flush_fresh(self) -> None:
        self._close_copy()
        if self._staged:
            inserted = self._insert(f"SELECT {self._select} FROM {STAGE}")
            self.counts.inserted += inserted
            self.conn.execute(text(f"TRUNCATE {STAGE}"))
            self._staged = 0

    def _reconcile(self) -> None:
        """Re-read window: keep unchanged rows, replace changed ones, drop vanished ones."""
        if not self._staged:
            where, params = self._scope("t")
            self.counts.deleted += self.conn.execute(
                text(f"DELETE FROM {self.table.qualified} AS t WHERE {where}"), params
            ).rowcount
            return
        self.conn.execute(text(f"ANALYZE {STAGE}"))
        # Both sides are bounded by the chunk; the raw table's statistics may predate this
        # load, and a nested loop over them is quadratic. Hash joins in memory instead.
        self.conn.execute(text("SET LOCAL enable_nestloop = off"))
        self.conn.execute(text(f"SET LOCAL work_mem = '{self.work_mem}'"))
        where, params = self._scope("t")
        deleted = self.conn.execute(
            text(
                f"DELETE FROM {self.table.qualified} AS t WHERE {where} AND NOT EXISTS "
                f"(SELECT 1 FROM {STAGE} AS s WHERE {self._match} AND {self._same})"
            ),
            params,
        ).rowcount
        inserted = self._insert(
            f"SELECT {self._select} FROM {STAGE} AS s WHERE NOT EXISTS "
            f"(SELECT 1 FROM {self.table.qualified} AS t WHERE {self._match} AND {where})"
        )
        self.counts.updated += min(deleted, inserted)
        self.counts.inserted += inserted - min(deleted, inserted)
        self.counts.deleted += deleted - min(deleted, inserted)
        self.counts.unchanged += max(self._staged - inserted, 0)

    def _insert(self, select: str, *, upsert: bool = False) -> int:
        """INSERT the selected staged rows; on a repeated key, upsert keeping the last copy."""
        params = self._scope("t")[1]
        if not upsert:
            try:
                with self.conn.begin_nested():
                    return int(
                        self.conn.execute(
                            text(f"INSERT INTO {self.table.qualified} ({self._names}) {select}"), params
                        ).rowcount
                    )
            except IntegrityError:
                pass
        updates = ", ".join(
            [
                *(f"{quote_ident(v)} = EXCLUDED.{quote_ident(v)}" for v in self._values),
                "connection_id = EXCLUDED.connection_id",
                "_synced_at = now()",
            ]
        )
        compared = ["connection_id", *self._values]
        changed = (
            f"({', '.join('t.' + quote_ident(v) for v in compared)}) IS DISTINCT FROM "
            f"({', '.join('EXCLUDED.' + quote_ident(v) for v in compared)})"
        )
        record_keys = ", ".join(quote_ident(k) for k in self.table.key if k != "tenant_id")
        return int(
            self.conn.execute(
                text(
                    f"INSERT INTO {self.table.qualified} AS t ({self._names}) "
                    f"SELECT DISTINCT ON ({record_keys}) {self._select} FROM {STAGE} "
                    f"ORDER BY {record_keys}, ctid DESC "
                    f"ON CONFLICT ({self._keys}) DO UPDATE SET {updates} WHERE {changed}"
                ),
                params,
            ).rowcount
        )


def delete_outside(
    conn: Connection, table: RawTable, *, tenant_id: UUID, connection_id: UUID, window: Window
) -> int:
    """After a full refresh: remove the connection's rows outside the re-read window."""
    low, high = bounds(table, window)
    cursor = quote_ident(table.cursor or "")
    return int(
        conn.execute(
            text(
                f"DELETE FROM {table.qualified} WHERE tenant_id = :t AND connection_id = :c "
                f"AND ({cursor} < :low OR {cursor} >= :high)"
            ),
            {"t": tenant_id, "c": connection_id, "low": low, "high": high},
        ).rowcount
    )


def bounds(table: RawTable, window: Window) -> tuple[Any, Any]:
    """The window in the cursor column's own type (dates for date cursors)."""
    start, end = window
    if table.cursor is not None and table.column(table.cursor).pg_type == "date":
        return start.date(), end.date()
    return start, end
