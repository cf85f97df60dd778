"""Gift subscriptions (ledger.md §2.10, §8 L): grant a catalog plan to a user for a number of
days — `POST /billing/subscriptions/gifts` and `billing grant` (mint class: a gift is a
plan given for free; the gateway admits only minters and the handler checks again for bus
callers) — and the job that ends gifts at their period end."""

from __future__ import annotations

import asyncpg

from contracts import Scope
from contracts.errors import forbidden
from contracts.gifts import GIFT_GRANT, GiftGrant, GiftGrantParams
from contracts.ids import new_id, now, rfc3339
from services.runtime.bus import created
from services.runtime.scopes import service_scope
from services.runtime.service import Context, Router
from services.subscriptions.gifts import domain, store
from services.subscriptions.subscriptions.handlers import announce
from services.subscriptions.subscriptions.store import snapshot

router = Router()
ENDING_BATCH = 500


@router.handler(GIFT_GRANT, transaction=True)
async def grant(ctx: Context, scope: Scope, p: GiftGrantParams, conn: asyncpg.Connection):
    gift = domain.grant(p, ctx.state.catalog, scope.actor, now())
    if not scope.actor.may_mint:
        raise forbidden()
    row, new = await store.grant(
        conn, scope.org_id, scope.livemode, new_id("sub_"), gift.user,
        snapshot(domain.terms(gift.plan)), gift.plan.category, gift.granted_at,
        gift.period_end, gift.first_metadata(), gift.again_metadata())
    await announce(conn, scope, row, "subscription.created" if new else "subscription.updated")
    result = GiftGrant(subscriptionId=row["id"], userId=row["user_id"],
                       planSlug=row["plan_slug"], status=row["status"],
                       currentPeriodEnd=rfc3339(row["period_end"]), extended=not new)
    return created(result) if new else result


async def end_gifts(ctx: Context) -> None:
    """The job: gifts whose period is over end (canceled at their period end, never
    renewed), each announced as a cancel is."""
    while True:
        async with ctx.pool.acquire() as conn, conn.transaction():
            ended = await store.end_due(conn, now(), ENDING_BATCH)
            for row in ended:
                await announce(conn, service_scope(row["org_id"], row["livemode"]), row,
                               "subscription.canceled")
        if len(ended) < ENDING_BATCH:
            return
