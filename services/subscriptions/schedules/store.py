"""Subscription schedules: the SQL (schema `subscriptions`). Every query names the
organization and the mode, except `due`, the runner's look across organizations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from services.runtime.db import fetch_page, insert_owned

Db = asyncpg.Pool | asyncpg.Connection

_SCHEDULE = ("id, customer_id, subscription_id, status, start_date, end_behavior, phases,"
             " metadata, current_phase, next_run_at, refusals, created_at")


async def create(conn: asyncpg.Connection, org_id: str, livemode: bool, schedule_id: str,
                 **fields: Any) -> asyncpg.Record:
    return await insert_owned(conn, "subscriptions.subscription_schedules", _SCHEDULE, org_id,
                              livemode, schedule_id, **fields)


async def schedule(db: Db, org_id: str, livemode: bool, schedule_id: str, *,
                   lock: bool = False) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {_SCHEDULE} from subscriptions.subscription_schedules where org_id = $1"
        f" and livemode = $2 and id = $3" + (" for update" if lock else ""),
        org_id, livemode, schedule_id)


async def update(conn: asyncpg.Connection, org_id: str, livemode: bool, schedule_id: str,
                 **fields: Any) -> asyncpg.Record:
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=4))
    return await conn.fetchrow(
        f"update subscriptions.subscription_schedules set {sets}, updated_at = now()"
        f" where org_id = $1 and livemode = $2 and id = $3 returning {_SCHEDULE}",
        org_id, livemode, schedule_id, *fields.values())


async def take(conn: asyncpg.Connection, org_id: str, livemode: bool, schedule_id: str,
               ) -> asyncpg.Record | None:
    """The schedule, locked for this transaction; None while another runner holds it (it
    is crossing a boundary: what it commits is read on the next run)."""
    return await conn.fetchrow(
        f"select {_SCHEDULE} from subscriptions.subscription_schedules where org_id = $1"
        f" and livemode = $2 and id = $3 for update skip locked", org_id, livemode, schedule_id)


async def postpone(db: Db, org_id: str, livemode: bool, schedule_id: str, until: datetime,
                   *, refused: bool) -> None:
    """Look at the schedule again at `until` (its boundary stays due meanwhile), counting a
    refusal."""
    await db.execute(
        "update subscriptions.subscription_schedules set next_run_at = $4,"
        " refusals = refusals + $5::int where org_id = $1 and livemode = $2 and id = $3"
        " and next_run_at is not null", org_id, livemode, schedule_id, until, int(refused))


async def due(db: Db, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Schedules with a boundary due, across organizations, the most overdue first."""
    return await db.fetch(
        "select org_id, livemode, id from subscriptions.subscription_schedules"
        " where next_run_at <= $1 and status in ('not_started', 'active')"
        " order by next_run_at limit $2", now, limit)


async def schedules(db: Db, org_id: str, livemode: bool, customer_id: str, status: str,
                    limit: int, offset: int) -> tuple[list[asyncpg.Record], int]:
    """A page, newest first (§3.3.2 OURS), and how many match in all."""
    return await fetch_page(db,
        f"""select {_SCHEDULE}, count(*) over () as total
        from subscriptions.subscription_schedules
        where org_id = $1 and livemode = $2 and ($3 = '' or customer_id = $3)
          and ($4 = '' or status = $4)
        order by created_at desc, id desc limit $5 offset $6""",
        org_id, livemode, customer_id, status, limit, offset)
