"""The event log's reads (payments.md §6.1, §6.2): an organization's events in the caller's
mode, newest first. Admin routes."""

from __future__ import annotations

from contracts import Scope
from contracts.common import IdParams
from contracts.errors import not_found
from contracts.webhooks import (
    EVENT_GET,
    EVENT_LIST,
    BillingEvent,
    EventListParams,
)
from services.payments.events import domain, store
from services.runtime.service import Context, Router

router = Router()


@router.handler(EVENT_LIST)
async def list_events(ctx: Context, scope: Scope, p: EventListParams) -> list[BillingEvent]:
    rows = await store.events(ctx.pool, scope.org_id, scope.livemode, domain.wanted(p))
    return [domain.billing_event(r["body"], r["pending"]) for r in rows]


@router.handler(EVENT_GET)
async def get_event(ctx: Context, scope: Scope, p: IdParams) -> BillingEvent:
    row = await store.event(ctx.pool, scope.org_id, scope.livemode, p.id.strip())
    if row is None:
        raise not_found(domain.EVENT_NOT_FOUND)
    return domain.billing_event(row["body"], row["pending"])
