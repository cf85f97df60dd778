"""Webhook endpoints: the SQL. Every query names the organization and the mode; deleted
endpoints are found by none of them."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.payments.webhook_endpoints.domain import DISABLED, ENABLED, Change
from services.runtime.db import newest_first

Db = asyncpg.Pool | asyncpg.Connection

_ENDPOINT = "org_id, livemode, id, url, events, description, status, created_at"


async def create(conn: asyncpg.Connection, org_id: str, livemode: bool, endpoint_id: str,
                 url: str, events: list[str], description: str, key_id: str, sealed: bytes,
                 ) -> asyncpg.Record:
    return await conn.fetchrow(
        f"insert into payments.webhook_endpoints (org_id, livemode, id, url, events,"
        f" description, secret_key_id, secret) values ($1, $2, $3, $4, $5, $6, $7, $8)"
        f" returning {_ENDPOINT}",
        org_id, livemode, endpoint_id, url, events, description, key_id, sealed)


_ENDPOINTS = newest_first("payments.webhook_endpoints", _ENDPOINT, where="deleted_at is null")


async def endpoints(db: Db, org_id: str, livemode: bool, limit: int, starting_after: str,
                    ) -> list[asyncpg.Record]:
    return await db.fetch(_ENDPOINTS, org_id, livemode, limit, starting_after)


async def endpoint(db: Db, org_id: str, livemode: bool, endpoint_id: str, *,
                   lock: bool = False) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_ENDPOINT} from payments.webhook_endpoints"
        f" where org_id = $1 and livemode = $2 and id = $3 and deleted_at is null"
        f"{' for update' if lock else ''}", org_id, livemode, endpoint_id)


async def update(conn: asyncpg.Connection, org_id: str, livemode: bool, endpoint_id: str,
                 c: Change) -> asyncpg.Record | None:
    """Apply the change. Enabling a disabled endpoint starts its three days afresh."""
    return await conn.fetchrow(
        f"""update payments.webhook_endpoints set
            url = coalesce($4, url), events = coalesce($5, events),
            description = coalesce($6, description), status = coalesce($7, status),
            failing_since = case when $7 = '{ENABLED}' and status = '{DISABLED}' then null
                                 else failing_since end,
            updated_at = now()
        where org_id = $1 and livemode = $2 and id = $3 and deleted_at is null
        returning {_ENDPOINT}""",
        org_id, livemode, endpoint_id, c.url, c.events, c.description, c.status)


async def rotate(db: Db, org_id: str, livemode: bool, endpoint_id: str,
                 key_id: str, sealed: bytes, previous_until: datetime) -> asyncpg.Record | None:
    """A new secret; the one it replaces keeps signing until `previous_until`."""
    return await db.fetchrow(
        f"update payments.webhook_endpoints set previous_key_id = secret_key_id,"
        f" previous_secret = secret, previous_until = $6, secret_key_id = $4, secret = $5,"
        f" updated_at = now()"
        f" where org_id = $1 and livemode = $2 and id = $3 and deleted_at is null"
        f" returning {_ENDPOINT}", org_id, livemode, endpoint_id, key_id, sealed, previous_until)


async def delete(conn: asyncpg.Connection, org_id: str, livemode: bool, endpoint_id: str,
                 ) -> bool:
    return await conn.fetchval(
        "update payments.webhook_endpoints set deleted_at = now(), updated_at = now()"
        " where org_id = $1 and livemode = $2 and id = $3 and deleted_at is null"
        " returning true", org_id, livemode, endpoint_id) is not None
