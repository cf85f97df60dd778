"""Entitlements: the SQL."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from contracts.entitlements import ENTITLING_STATUSES


async def entitling_plans(db: asyncpg.Pool, org_id: str, livemode: bool, user_id: str,
                          now: datetime) -> list[asyncpg.Record]:
    """(category, plan slug) of the user's subscriptions that entitle now, newest first: not
    ended, in an entitling status, and a gift only until its period end (the job that ends
    gifts may not have run yet)."""
    return await db.fetch(
        """select plan_category, plan_slug from subscriptions.subscriptions
        where org_id = $1 and livemode = $2 and user_id = $3 and ended_at is null
          and status = any($4::text[])
          and (provider_type <> 'manual_gift' or period_end > $5)
        order by start_at desc, id desc""",
        org_id, livemode, user_id, list(ENTITLING_STATUSES), now)
