"""Subscription items: the SQL (schema `subscriptions`). Every query names the organization
and the mode; deleted items (soft delete) are invisible to all of them."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.runtime.db import fetch_page, insert_owned

Db = asyncpg.Pool | asyncpg.Connection

_ITEM = ("id, subscription_id, price_id, plan_id, meter_id, quantity, billing_mode,"
         " unit_amount, metadata, created_at")


async def subscription_owner(db: Db, org_id: str, livemode: bool, subscription_id: str,
                             ) -> str | None:
    """The customer of the organization's subscription, None when it has no such one."""
    return await db.fetchval(
        "select user_id from subscriptions.subscriptions where org_id = $1 and livemode = $2"
        " and id = $3", org_id, livemode, subscription_id)


async def create(conn: asyncpg.Connection, org_id: str, livemode: bool, item_id: str,
                 **fields: Any) -> asyncpg.Record:
    return await insert_owned(conn, "subscriptions.subscription_items", _ITEM, org_id,
                              livemode, item_id, **fields)


async def item(db: Db, org_id: str, livemode: bool, item_id: str, *, lock: bool = False,
               ) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_ITEM} from subscriptions.subscription_items where org_id = $1"
        f" and livemode = $2 and id = $3 and deleted_at is null"
        + (" for update" if lock else ""), org_id, livemode, item_id)


async def update(conn: asyncpg.Connection, org_id: str, livemode: bool, item_id: str,
                 **fields: Any) -> asyncpg.Record:
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=4))
    return await conn.fetchrow(
        f"update subscriptions.subscription_items set {sets}, updated_at = now()"
        f" where org_id = $1 and livemode = $2 and id = $3 returning {_ITEM}",
        org_id, livemode, item_id, *fields.values())


async def delete(conn: asyncpg.Connection, org_id: str, livemode: bool, item_id: str) -> None:
    await conn.execute(
        "update subscriptions.subscription_items set deleted_at = now(), updated_at = now()"
        " where org_id = $1 and livemode = $2 and id = $3", org_id, livemode, item_id)


async def items(db: Db, org_id: str, livemode: bool, subscription_id: str, limit: int,
                offset: int) -> tuple[list[asyncpg.Record], int]:
    """A page, newest first (§3.2.2 OURS), and how many match in all."""
    return await fetch_page(db,
        f"""select {_ITEM}, count(*) over () as total from subscriptions.subscription_items
        where org_id = $1 and livemode = $2 and deleted_at is null
          and ($3 = '' or subscription_id = $3)
        order by created_at desc, id desc limit $4 offset $5""",
        org_id, livemode, subscription_id, limit, offset)


async def billable_items(conn: asyncpg.Connection, org_id: str, livemode: bool,
                         subscription_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    """The live items of these subscriptions, by subscription, oldest first (for the cycle:
    a licensed item bills quantity × unit_amount, a metered one its meter's usage)."""
    rows = await conn.fetch(
        """select subscription_id, id, meter_id, plan_id, price_id, quantity, billing_mode,
                  unit_amount
        from subscriptions.subscription_items
        where org_id = $1 and livemode = $2 and subscription_id = any($3::text[])
          and deleted_at is null
        order by created_at, id""", org_id, livemode, subscription_ids)
    by_subscription: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        by_subscription.setdefault(row["subscription_id"], []).append(row)
    return by_subscription
