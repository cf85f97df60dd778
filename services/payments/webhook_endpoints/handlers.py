"""Webhook endpoints (payments.md §6.3): create (the signing secret answered once, then only
kept sealed), list, get, update, delete, and rotate the secret (the new one answered once;
the old one keeps signing, as a second `v1`, for a day). Admin routes, in the caller's mode.

An endpoint disabled or deleted receives nothing more: its deliveries still waiting are
canceled in the same transaction (they stay listed, and can be sent again once it is
enabled). Creating an endpoint and rotating its secret are not replayed under an
Idempotency-Key: the stored answer would keep the secret in clear."""

from __future__ import annotations

import asyncpg

from contracts import Scope
from contracts.common import IdParams
from contracts.errors import not_found
from contracts.ids import new_id
from contracts.webhooks import (
    WEBHOOK_ENDPOINT_CREATE,
    WEBHOOK_ENDPOINT_DELETE,
    WEBHOOK_ENDPOINT_GET,
    WEBHOOK_ENDPOINT_LIST,
    WEBHOOK_ENDPOINT_ROTATE_SECRET,
    WEBHOOK_ENDPOINT_UPDATE,
    WebhookEndpoint,
    WebhookEndpointCreateParams,
    WebhookEndpointDeleted,
    WebhookEndpointListParams,
    WebhookEndpointUpdateParams,
)
from services.payments.webhook_deliveries import store as deliveries
from services.payments.webhook_endpoints import domain, store
from services.runtime.bus import created
from services.runtime.service import Context, Router

router = Router()


@router.handler(WEBHOOK_ENDPOINT_CREATE)
async def create_endpoint(ctx: Context, scope: Scope, p: WebhookEndpointCreateParams):
    url, events, description = domain.created(p, scope.livemode)
    endpoint_id, secret = new_id("we_"), domain.new_secret()
    key_id, sealed = domain.seal(ctx.state.secrets, scope.org_id, scope.livemode, endpoint_id,
                                 secret)
    row = await store.create(ctx.pool, scope.org_id, scope.livemode, endpoint_id, url, events,
                             description, key_id, sealed)
    return created(domain.view(row, secret))


@router.handler(WEBHOOK_ENDPOINT_LIST)
async def list_endpoints(ctx: Context, scope: Scope, p: WebhookEndpointListParams,
                         ) -> list[WebhookEndpoint]:
    rows = await store.endpoints(ctx.pool, scope.org_id, scope.livemode,
                                 domain.PAGE.apply(p.limit, 0)[0],
                                 p.startingAfter.strip())
    return [domain.view(r) for r in rows]


@router.handler(WEBHOOK_ENDPOINT_GET)
async def get_endpoint(ctx: Context, scope: Scope, p: IdParams,
                       ) -> WebhookEndpoint:
    return domain.view(domain.found(
        await store.endpoint(ctx.pool, scope.org_id, scope.livemode, p.id.strip())))


@router.handler(WEBHOOK_ENDPOINT_UPDATE, transaction=True)
async def update_endpoint(ctx: Context, scope: Scope, p: WebhookEndpointUpdateParams,
                          conn: asyncpg.Connection) -> WebhookEndpoint:
    endpoint_id = p.id.strip()
    domain.found(await store.endpoint(conn, scope.org_id, scope.livemode, endpoint_id,
                                      lock=True))  # 404 before the body's checks (§6.3)
    row = await store.update(conn, scope.org_id, scope.livemode, endpoint_id,
                             domain.change(p, scope.livemode))
    if row["status"] == domain.DISABLED:
        await deliveries.cancel_waiting(conn, scope.org_id, scope.livemode, endpoint_id)
    return domain.view(row)


@router.handler(WEBHOOK_ENDPOINT_ROTATE_SECRET)
async def rotate_secret(ctx: Context, scope: Scope, p: IdParams,
                        ) -> WebhookEndpoint:
    endpoint_id, secret = p.id.strip(), domain.new_secret()
    key_id, sealed = domain.seal(ctx.state.secrets, scope.org_id, scope.livemode, endpoint_id,
                                 secret)
    row = await store.rotate(ctx.pool, scope.org_id, scope.livemode, endpoint_id, key_id,
                             sealed, ctx.state.webhooks.clock() + domain.ROTATION_OVERLAP)
    return domain.view(domain.found(row), secret)


@router.handler(WEBHOOK_ENDPOINT_DELETE, transaction=True)
async def delete_endpoint(ctx: Context, scope: Scope, p: IdParams,
                          conn: asyncpg.Connection) -> WebhookEndpointDeleted:
    endpoint_id = p.id.strip()
    if not await store.delete(conn, scope.org_id, scope.livemode, endpoint_id):
        raise not_found(domain.ENDPOINT_NOT_FOUND)
    await deliveries.cancel_waiting(conn, scope.org_id, scope.livemode, endpoint_id)
    return WebhookEndpointDeleted(deleted=True, id=endpoint_id)
