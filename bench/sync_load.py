"""Benchmark: the sync engine's loader against the physical limit of an indexed load.

Loads N synthetic insight-like rows (10 columns, natural key of 6 including the tenant) through
the engine's path - pydantic validation of every record, tuple conversion, ``ChunkLoader`` in
``replace`` mode inside one tenant transaction with the stream state - and, in the same run,
a plain ``COPY`` of the same rows into an empty table with the same primary key. Then it
re-loads the same window as a restatement (every row already there), once with unchanged and
once with changed values, and finally loads through ``merge`` for comparison.

Usage: python bench/sync_load.py [--rows 1000000]
Database: ADCONNECT_TEST_DATABASE_URL (a role that may create databases) or an embedded server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from decimal import Decimal

from pydantic import BaseModel, TypeAdapter
from sqlalchemy import insert, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from adconnect.db.schema import connections, stream_states, tenants
from adconnect.models import StreamSpec
from adconnect.sync.loader import ChunkLoader
from adconnect.sync.raw_tables import RawTable, ensure_raw_table
from adconnect.sync.records import RecordValidator, prefetch, row_converter
from adconnect.testing.database import temporary_database


class Insight(BaseModel):
    account_id: str
    campaign_id: str
    adset_id: str
    ad_id: str
    date: dt.date
    impressions: int
    clicks: int
    spend: Decimal
    reach: int


SPEC = StreamSpec(
    name="insights",
    record_model=Insight,
    cursor_field="date",
    primary_key=("account_id", "campaign_id", "adset_id", "ad_id", "date"),
)
BASE = dt.date(2026, 1, 1)
STRATEGY: str | None = None  # None: what the engine picks
DAYS = 100
WINDOW = (
    dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=DAYS),
)


def records(n: int, bump: int = 0) -> list[dict[str, object]]:
    out = []
    for i in range(n):
        ad = i // DAYS
        out.append(
            {
                "account_id": "act_1",
                "campaign_id": f"c{ad % 50}",
                "adset_id": f"s{ad % 500}",
                "ad_id": f"ad{ad}",
                "date": BASE + dt.timedelta(days=i % DAYS),
                "impressions": i + bump,
                "clicks": i % 97,
                "spend": f"{(i % 1000) / 10:.2f}",
                "reach": i % 777,
            }
        )
    return out


def engine_load(db, table, tenant_id, connection_id, batch: list[dict[str, object]]) -> tuple[float, object]:
    """The engine's path: validate in the prefetch thread, stage + move in this one, one transaction."""
    validator = RecordValidator(SPEC, table)
    batches = (batch[start : start + 5000] for start in range(0, len(batch), 5000))  # as a provider yields
    started = time.perf_counter()
    with db.tenant(tenant_id) as conn:
        loader = ChunkLoader(
            conn,
            table,
            tenant_id=tenant_id,
            connection_id=connection_id,
            window=WINDOW,
            loader_role=db.loader_role,
            strategy=STRATEGY,
        )
        loader.begin()
        for validated in prefetch(batches, validator.validate):
            loader.write(validated.rows)
        counts = loader.finish()
        conn.execute(
            pg_insert(stream_states)
            .values(
                tenant_id=tenant_id,
                connection_id=connection_id,
                stream="insights",
                state={"window_end": "2026-04-11"},
            )
            .on_conflict_do_update(
                index_elements=["connection_id", "stream"], set_={"state": {"window_end": "2026-04-11"}}
            )
        )
    return time.perf_counter() - started, counts


def plain_copy(db, rows: list[tuple]) -> float:
    with db.admin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS public.plain"))
        conn.execute(
            text(
                "CREATE TABLE public.plain (tenant_id uuid NOT NULL, account_id text NOT NULL, "
                "campaign_id text NOT NULL, adset_id text NOT NULL, ad_id text NOT NULL, date date NOT NULL, "
                "impressions bigint, clicks bigint, spend numeric, reach bigint, "
                "PRIMARY KEY (tenant_id, account_id, campaign_id, adset_id, ad_id, date))"
            )
        )
    started = time.perf_counter()
    with db.admin() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy("COPY public.plain FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(
                ["uuid", "text", "text", "text", "text", "date", "int8", "int8", "numeric", "int8"]
            )
            for row in rows:
                copy.write_row(row)
    return time.perf_counter() - started


def python_overhead(table, batch: list[dict[str, object]]) -> float:
    """Seconds per record spent in Python by the engine: validation and tuple conversion."""
    validator = RecordValidator(SPEC, table)
    started = time.perf_counter()
    for start in range(0, len(batch), 5000):
        validator.validate(batch[start : start + 5000])
    return (time.perf_counter() - started) / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.rows
    fresh = records(n)
    changed = records(n, bump=1)
    with temporary_database() as db:
        with db.platform() as conn:
            tenant_id = conn.execute(
                insert(tenants).values(name="bench", slug="bench").returning(tenants.c.id)
            ).scalar_one()
        with db.tenant(tenant_id) as conn:
            connection_id = conn.execute(
                insert(connections)
                .values(tenant_id=tenant_id, provider_id="bench", name="default")
                .returning(connections.c.id)
            ).scalar_one()
        table = RawTable.from_spec("bench", SPEC)
        ensure_raw_table(db, table)
        adapter = TypeAdapter(list[Insight])
        tuples = [(tenant_id, *row_converter(table)(m)) for m in adapter.validate_python(fresh)]

        plain_copy(db, tuples[: min(n, 50_000)])  # warm-up
        plain = n / plain_copy(db, tuples)
        seconds, counts = engine_load(db, table, tenant_id, connection_id, fresh)
        fresh_rate = n / seconds
        seconds, restated_counts = engine_load(db, table, tenant_id, connection_id, fresh)
        same_rate = n / seconds
        tenth = [c if i % 10 == 0 else f for i, (f, c) in enumerate(zip(fresh, changed, strict=True))]
        seconds, tenth_counts = engine_load(db, table, tenant_id, connection_id, tenth)
        tenth_rate = n / seconds
        seconds, changed_counts = engine_load(db, table, tenant_id, connection_id, changed)
        changed_rate = n / seconds
        overhead = python_overhead(table, fresh[: min(n, 200_000)])
        with db.admin() as conn:
            stored = conn.execute(text(f"SELECT count(*) FROM {table.qualified}")).scalar_one()

    print(f"rows: {n:,} (10 columns, key of 6 incl. tenant); PostgreSQL via {db.admin_url.host or 'socket'}")
    print(f"plain COPY into an empty keyed table   {plain:>10,.0f} rows/s   (the physical limit)")
    print(
        f"engine loader, fresh window            {fresh_rate:>10,.0f} rows/s   ratio {fresh_rate / plain:.2f}"
        f"   target >= 0.70   {counts}"
    )
    print(
        f"engine loader, restated, same rows     {same_rate:>10,.0f} rows/s   ratio {same_rate / plain:.2f}"
        f"   target >= 0.50   {restated_counts}"
    )
    print(
        f"engine loader, restated, 10% changed   {tenth_rate:>10,.0f} rows/s   ratio {tenth_rate / plain:.2f}"
        f"                    {tenth_counts}"
    )
    print(
        f"engine loader, restated, all changed   {changed_rate:>10,.0f} rows/s   "
        f"ratio {changed_rate / plain:.2f}"
        f"                    {changed_counts}"
    )
    print(f"engine Python overhead per record      {overhead * 1e6:>10.2f} us   (validation + conversion)")
    print(f"rows in the raw table at the end       {stored:>10,}")


if __name__ == "__main__":
    main()
