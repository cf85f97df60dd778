"""Gift subscriptions: the SQL. A grant is one upsert on the one-gift-per-plan index
(migration 004), so concurrent grants of one plan to one user make one gift."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from services.subscriptions.gifts.domain import MANUAL_GIFT
from services.subscriptions.subscriptions.store import COLUMNS


async def grant(conn: asyncpg.Connection, org_id: str, livemode: bool, sub_id: str,
                user_id: str, plan: dict[str, Any], category: str, now: datetime,
                period_end: datetime, first: dict[str, str], again: dict[str, str],
                ) -> tuple[asyncpg.Record, bool]:
    """(the gift, whether it is new). A new gift is active from now to `period_end`; an
    existing one keeps its start, its end moves only later, and `again` joins its
    metadata."""
    row = await conn.fetchrow(
        f"""insert into subscriptions.subscriptions as s (org_id, livemode, id, user_id,
            plan_id, plan_slug, plan_category, plan_snapshot, status, quantity, period_start,
            period_end, billing_anchor, start_at, provider_type, metadata)
        values ($1, $2, $3, $4, $5, $5, $6, $7, 'active', 1, $8, $9, $8, $8, $10, $11)
        on conflict (org_id, livemode, user_id, plan_id)
            where provider_type = '{MANUAL_GIFT}' and ended_at is null
        do update set period_end = greatest(s.period_end, excluded.period_end),
            metadata = coalesce(s.metadata, '{{}}'::jsonb) || $12::jsonb,
            version = s.version + 1, updated_at = now()
        returning {COLUMNS}, (xmax = 0) as inserted""",
        org_id, livemode, sub_id, user_id, plan["id"], category, plan, now, period_end,
        MANUAL_GIFT, first, again)
    return row, row["inserted"]


async def end_due(conn: asyncpg.Connection, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Gifts whose period is over, ended at their period end (canceled, not renewed); rows
    another runner is ending are skipped."""
    return await conn.fetch(
        f"""update subscriptions.subscriptions s set status = 'canceled', canceled = true,
            canceled_at = coalesce(s.canceled_at, s.period_end), ended_at = s.period_end,
            cancel_at_period_end = false, version = s.version + 1, updated_at = now()
        where (s.org_id, s.livemode, s.id) in (
            select org_id, livemode, id from subscriptions.subscriptions
            where provider_type = '{MANUAL_GIFT}' and ended_at is null and period_end <= $1
            order by period_end limit $2 for update skip locked)
        returning {COLUMNS}, s.org_id, s.livemode""", now, limit)
