"""Subscription schedules: the SQL (schema `subscriptions`). Every query names the
organization and the mode, except `due`, the runner's look across organizations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from services.runtime.db import fetch_page

Db = asyncpg.Pool | asyncpg.Connection

_SCHEDULE = ("id, customer_id, subscription_id, status, start_date, end_behavior, phases,"
             " metadata, current_phase, next_run_at, created_at")


async def create(conn: asyncpg.Connection, org_id: str, livemode: bool, schedule_id: str,
                 **fields: Any) -> asyncpg.Record:
    names = list(fields)
    values = ", ".join(f"${i}" for i in range(4, 4 + len(names)))
    return await conn.fetchrow(
        f"insert into subscriptions.subscription_schedules (org_id, livemode, id,"
        f" {', '.join(names)}) values ($1, $2, $3, {values}) returning {_SCHEDULE}",
        org_id, livemode, schedule_id, *fields.values())


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


async def claim(conn: asyncpg.Connection, org_id: str, livemode: bool, schedule_id: str,
                phase: int, now: datetime) -> asyncpg.Record | None:
    """Boundary `phase` of the schedule, for this transaction: the row moves from the phase
    before to `phase` and stays locked until commit. None when the boundary is not due, was
    taken by another runner, or the schedule was stopped meanwhile (a runner holding it is
    waited for, then its result read)."""
    return await conn.fetchrow(
        f"update subscriptions.subscription_schedules set current_phase = $4,"
        f" updated_at = now() where org_id = $1 and livemode = $2 and id = $3"
        f" and current_phase = $4 - 1 and status in ('not_started', 'active')"
        f" and next_run_at <= $5 returning {_SCHEDULE}",
        org_id, livemode, schedule_id, phase, now)


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
