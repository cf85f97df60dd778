"""PostgreSQL through asyncpg: pools, database creation, versioned migrations, statistics
for new tables, the insert of an organization's row, and the query of a page of rows newest
first."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec

log = logging.getLogger(__name__)

RUNTIME_MIGRATIONS = Path(__file__).parent / "migrations"


async def delete_older_than(db: asyncpg.Pool, table: str, cutoff: object,
                            chunk: int = 10_000) -> int:
    """Delete the rows of `table` (schema-qualified, with a `created_at` column) older than
    `cutoff`, a chunk at a time so that no transaction is long. Returns how many."""
    deleted = 0
    while True:
        status = await db.execute(
            f"delete from {table} where ctid in"
            f" (select ctid from {table} where created_at < $1 limit $2)", cutoff, chunk)
        count = int(status.split()[-1])
        deleted += count
        if count < chunk:
            return deleted


async def insert_owned(conn: asyncpg.Connection, table: str, returning: str, org_id: str,
                       livemode: bool, row_id: str, **fields: object) -> asyncpg.Record:
    """Insert a row of an organization and mode into `table` (schema-qualified): its id and
    the named columns; returns the columns `returning` names."""
    names = ", ".join(fields)
    values = ", ".join(f"${i}" for i in range(4, 4 + len(fields)))
    return await conn.fetchrow(
        f"insert into {table} (org_id, livemode, id, {names}) values ($1, $2, $3, {values})"
        f" returning {returning}", org_id, livemode, row_id, *fields.values())


async def fetch_page(db: asyncpg.Pool | asyncpg.Connection, query: str, *args: object
                     ) -> tuple[list[asyncpg.Record], int]:
    """A page of rows and how many there are in all. `query` selects `count(*) over () as
    total` and ends with `limit … offset …`, taken from the last two `args`. A page past the
    end has no row to read the total from: the first row is asked for instead."""
    rows = await db.fetch(query, *args)
    if rows:
        return rows, rows[0]["total"]
    if args[-1] == 0:
        return rows, 0
    first = await db.fetch(query, *args[:-2], 1, 0)
    return rows, first[0]["total"] if first else 0


async def init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects, through msgspec rather than the json module.
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", format="text",
        encoder=lambda v: msgspec.json.encode(v).decode(), decoder=msgspec.json.decode,
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Connections go back to the pool as they are: our code leaves no session state behind
    (transactions and their advisory locks end with `async with`), and asyncpg's default
    reset costs a round trip on every release."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20,
                      settings: dict[str, str] | None = None) -> asyncpg.Pool:
    """A pool whose sessions start with `settings` (PostgreSQL parameters), if any."""
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                     init=init_connection, reset=_keep_session,
                                     server_settings=settings)


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


# A new database's tables have no planner statistics until autovacuum comes round (a minute
# or more), and the plans a session keeps meanwhile (its prepared statements, foreign-key
# checks, trigger queries) are made for empty tables: two indexes that share a prefix then
# cost the same, and a plan may read a whole organization's rows through the wrong one — more
# with every row written, for as long as the session lives. A table analyzed once it holds a
# few pages has its plans made again, with statistics. (By its size on disk, not by the
# statistics collector's counts: under load those reach it seconds late.)
FRESH_TABLE_BYTES = 32768


async def analyze_fresh_tables(db: asyncpg.Pool, schema: str) -> list[str]:
    """Analyze the tables of `schema` never analyzed that hold `FRESH_TABLE_BYTES` (skipped
    when another replica is at it); returns their names."""
    names = [r["name"] for r in await db.fetch(
        "select format('%I.%I', n.nspname, c.relname) as name from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = $1 and c.relkind = 'r' and c.reltuples < 0"
        " and pg_relation_size(c.oid) >= $2", schema, FRESH_TABLE_BYTES)]
    for name in names:
        await db.execute(f"analyze (skip_locked) {name}")
    return names


async def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` if it does not exist (development convenience)."""
    name = urlsplit(dsn).path.lstrip("/") or "postgres"
    conn = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        exists = await conn.fetchval("select 1 from pg_database where datname = $1", name)
        if not exists:
            try:
                await conn.execute(f'create database "{name}"')
            except asyncpg.DuplicateDatabaseError:
                pass  # another process created it first
    finally:
        await conn.close()


class MigrationsMissing(RuntimeError):
    """A migrations folder that is absent or holds no `*.sql` file: a broken install (the
    package data was not shipped), never "nothing to do"."""


def migration_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.sql")) if folder.is_dir() else []
    if not files:
        raise MigrationsMissing(f"no migrations in {str(folder)!r}: the package is incomplete")
    return files


async def migrate(conn: asyncpg.Connection, schema: str, directory: Path | None) -> list[str]:
    """Apply pending migrations of one service schema; returns the versions applied.

    The runtime's own migrations (idempotency keys, ...) come first, then the service's
    (`directory`; None: the runtime's only). A folder that is missing or empty raises
    `MigrationsMissing` before anything is touched.
    A session advisory lock per schema makes replicas that start together apply each file
    exactly once: the second waits, then finds nothing left to do.
    """
    sources = [("runtime", migration_files(RUNTIME_MIGRATIONS))]
    if directory is not None:
        sources.append((schema, migration_files(directory)))
    lock_key = f"billing.migrate.{schema}"
    await conn.execute("select pg_advisory_lock(hashtextextended($1, 0))", lock_key)
    try:
        await conn.execute(f"create schema if not exists {schema}")
        await conn.execute(
            f"create table if not exists {schema}.schema_migrations ("
            " version text primary key, applied_at timestamptz not null default now())"
        )
        applied = {r["version"] for r in await conn.fetch(
            f"select version from {schema}.schema_migrations")}
        pending: list[tuple[str, str]] = []
        for prefix, files in sources:
            for path in files:
                version = f"{prefix}/{path.stem}"
                if version not in applied:
                    pending.append((version, path.read_text().replace("{schema}", schema)))
        for version, sql in pending:
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    f"insert into {schema}.schema_migrations (version) values ($1)", version)
            log.info("applied migration %s", version)
        return [v for v, _ in pending]
    finally:
        await conn.execute("select pg_advisory_unlock(hashtextextended($1, 0))", lock_key)


def newest_first(table: str, columns: str, filters: tuple[str, ...] = (), where: str = "",
                 ) -> str:
    """The SQL of a page of an organization's rows in one mode, newest first. Parameters:
    the organization and the mode; one per column of `filters` (an empty one leaves it
    out); the page's size; the id the page starts after ('' for the first). `where`: what
    every row listed meets."""
    size, after = 3 + len(filters), 4 + len(filters)
    conditions = "".join(f" and (${n} = '' or {column} = ${n})"
                         for n, column in enumerate(filters, start=3))
    return (f"select {columns} from {table} where org_id = $1 and livemode = $2"
            f"{f' and {where}' if where else ''}{conditions}"
            f" and (${after} = '' or (created_at, id) < (select created_at, id from {table}"
            f" where org_id = $1 and livemode = $2 and id = ${after}))"
            f" order by created_at desc, id desc limit ${size}")
