"""Planner statistics for a new database's tables (`db.analyze_fresh_tables`): a table that
has grown past a few pages without ever being analyzed is analyzed, and the plans made for
it empty are made again — a lookup by key reads its row through the key's index instead of
every row of the organization through another index on the same leading columns."""

from __future__ import annotations

import secrets

from services.runtime import db


async def test_a_grown_table_is_analyzed_and_planned_again_by_its_key(pool):
    schema = f"fresh_{secrets.token_hex(3)}"
    async with pool.acquire() as conn:
        await conn.execute(
            f"create schema {schema};"
            f" create table {schema}.accounts (org_id text, id text, name text,"
            f"  primary key (org_id, id), unique (org_id, name));"
            f" create table {schema}.empty (id text primary key)")
        lookup = f"select name from {schema}.accounts where org_id = $1 and id = $2"
        await conn.fetch(lookup, "org_1", "a_0")  # planned while the table is empty
        await conn.execute(
            f"insert into {schema}.accounts select 'org_1', 'a_' || n, 'name_' || n"
            f" from generate_series(1, 2000) n")

        assert await db.analyze_fresh_tables(pool, schema) == [f"{schema}.accounts"]
        assert await db.analyze_fresh_tables(pool, schema) == []  # once: autovacuum's then
        plan = "\n".join(r[0] for r in await conn.fetch(
            f"explain select name from {schema}.accounts where org_id = 'org_1'"
            f" and id = 'a_7'"))
        assert "accounts_pkey" in plan, plan
        assert await conn.fetchval(lookup, "org_1", "a_7") == "name_7"
