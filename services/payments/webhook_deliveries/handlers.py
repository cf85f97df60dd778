"""An endpoint's deliveries (payments.md §6.5): listed last queued first with their latest
attempt, read one with every attempt, and sent again. Admin routes, in the caller's mode.

A redelivery (our addition: the spec names no route) goes to the back of the endpoint's
queue on a fresh schedule; the delivery keeps its id and its earlier attempts."""

from __future__ import annotations

import asyncpg

from contracts import Scope
from contracts.webhooks import (
    WEBHOOK_DELIVERY_GET,
    WEBHOOK_DELIVERY_LIST,
    WEBHOOK_DELIVERY_REDELIVER,
    WebhookDelivery,
    WebhookDeliveryIdParams,
    WebhookDeliveryListParams,
)
from services.payments.webhook_deliveries import domain, store
from services.payments.webhook_endpoints import domain as endpoints_domain
from services.payments.webhook_endpoints import store as endpoints
from services.runtime.service import Context, Router

router = Router()


@router.handler(WEBHOOK_DELIVERY_LIST)
async def list_deliveries(ctx: Context, scope: Scope, p: WebhookDeliveryListParams,
                          ) -> list[WebhookDelivery]:
    endpoint_id = p.id.strip()
    endpoints_domain.found(await endpoints.endpoint(ctx.pool, scope.org_id, scope.livemode,
                                                    endpoint_id))
    rows = await store.deliveries(ctx.pool, scope.org_id, scope.livemode, endpoint_id,
                                  p.status.strip(), p.eventId.strip(),
                                  domain.PAGE.apply(p.limit, 0)[0],
                                  p.startingAfter.strip())
    return [domain.view(r) for r in rows]


@router.handler(WEBHOOK_DELIVERY_GET)
async def get_delivery(ctx: Context, scope: Scope, p: WebhookDeliveryIdParams,
                       ) -> WebhookDelivery:
    row = domain.found(await store.delivery(ctx.pool, scope.org_id, scope.livemode,
                                            p.id.strip(), p.deliveryId.strip()))
    return domain.view(row, await store.attempts(ctx.pool, row["id"]))


@router.handler(WEBHOOK_DELIVERY_REDELIVER, transaction=True)
async def redeliver(ctx: Context, scope: Scope, p: WebhookDeliveryIdParams,
                    conn: asyncpg.Connection) -> WebhookDelivery:
    endpoint_id, delivery_id = p.id.strip(), p.deliveryId.strip()
    endpoint = endpoints_domain.found(await endpoints.endpoint(
        conn, scope.org_id, scope.livemode, endpoint_id, lock=True))
    row = domain.found(await store.delivery(conn, scope.org_id, scope.livemode, endpoint_id,
                                            delivery_id))
    domain.redeliverable(row["status"], endpoint["status"])
    row = await store.requeue(conn, scope.org_id, scope.livemode, endpoint_id, delivery_id,
                              ctx.state.webhooks.clock())
    ctx.state.webhooks.wake()  # a little early (before commit): the poll finds it anyway
    return domain.view(row, await store.attempts(conn, delivery_id))
