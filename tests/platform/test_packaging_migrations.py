"""A migrations folder that is missing or empty is a broken install, never "nothing to do"."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from services.runtime import db


@pytest.mark.parametrize("empty", [False, True])
async def test_a_missing_or_empty_migrations_folder_is_an_error(database_url, tmp_path, empty):
    folder = tmp_path / "migrations"
    if empty:
        folder.mkdir()
    schema = f"broken_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(db.MigrationsMissing, match="no migrations in"):
            await db.migrate(conn, schema, folder)
        # Refused before anything was touched: no schema half made.
        assert not await conn.fetchval(
            "select 1 from information_schema.schemata where schema_name = $1", schema)
    finally:
        await conn.close()
