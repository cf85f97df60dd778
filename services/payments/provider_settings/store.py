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


async def claim_accounts(conn: asyncpg.Connection, org_id: str, livemode: bool,
                         accounts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The organization's provider accounts in this mode become `accounts`, in the caller's
    transaction; those another organization holds in this mode stay its (returned)."""
    await conn.execute("delete from payments.provider_accounts"
                       " where org_id = $1 and livemode = $2", org_id, livemode)
    if not accounts:
        return []
    claimed = await conn.fetch(
        "insert into payments.provider_accounts (provider, account_id, livemode, org_id)"
        " select provider, account_id, $3, $4 from unnest($1::text[], $2::text[])"
        " as a(provider, account_id) on conflict do nothing returning provider, account_id",
        [p for p, _ in accounts], [a for _, a in accounts], livemode, org_id)
    return sorted(set(accounts) - {tuple(r) for r in claimed})


async def account_owners(db: Db, accounts: list[tuple[str, str]],
                         ) -> dict[tuple[str, str], dict[bool, str]]:
    """The organization that named each (provider, account) in its settings, by mode."""
    owners: dict[tuple[str, str], dict[bool, str]] = {}
    for r in await db.fetch(
            "select provider, account_id, org_id, livemode from payments.provider_accounts"
            " where (provider, account_id) in (select * from unnest($1::text[], $2::text[]))",
            *map(list, zip(*accounts, strict=True))):
        owners.setdefault((r["provider"], r["account_id"]), {})[r["livemode"]] = r["org_id"]
    return owners
