"""Provider settings: the SQL. One row per organization and mode."""

from __future__ import annotations

import asyncpg

Db = asyncpg.Pool | asyncpg.Connection

_SETTINGS = "preferred_processor, credentials, key_id, version, updated_at"


async def settings(db: Db, org_id: str, livemode: bool) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_SETTINGS} from payments.provider_settings"
        f" where org_id = $1 and livemode = $2", org_id, livemode)


async def settings_to_change(conn: asyncpg.Connection, org_id: str, livemode: bool,
                             ) -> asyncpg.Record | None:
    """The row, once no other change of it is under way (a first write has no row to lock:
    two concurrent ones would each miss the other's settings)."""
    await conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))",
                       f"payments.provider_settings|{org_id}|{livemode}")
    return await settings(conn, org_id, livemode)


async def save(conn: asyncpg.Connection, org_id: str, livemode: bool, preferred: str,
               key_id: str, credentials: bytes | None) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""insert into payments.provider_settings
            (org_id, livemode, preferred_processor, key_id, credentials)
        values ($1, $2, $3, $4, $5)
        on conflict (org_id, livemode) do update set
            preferred_processor = excluded.preferred_processor, key_id = excluded.key_id,
            credentials = excluded.credentials,
            version = payments.provider_settings.version + 1, updated_at = now()
        returning {_SETTINGS}""", org_id, livemode, preferred, key_id, credentials)
