"""Provider subscription events (subscriptions.md §2.7 OURS): `provider_event.apply` on the
bus, and the same for every `provider.<type>` event payments publishes (`consumer.py`).

An event is applied once per (processor, event id) in its organization and mode, in one
transaction with the subscription's row lock: the subscription is found by its provider
and provider id, the provider's status (through our whitelist), periods and cancel taken;
an invoice paid revives a past-due subscription, a failed one makes it past due. An event
about a subscription we do not have is acknowledged and changes nothing. Changes are
announced as the REST paths announce theirs (`subscription.updated|canceled|past_due|...`)."""

from __future__ import annotations

import asyncpg

from contracts import Scope
from contracts.ids import now
from contracts.provider_events import (
    PROVIDER_EVENT_APPLY,
    ProviderEventApplied,
    ProviderEventParams,
)
from services.runtime.service import Context, Router
from services.subscriptions.reconcile import domain, store
from services.subscriptions.subscriptions.handlers import announce

router = Router()


@router.handler(PROVIDER_EVENT_APPLY, transaction=True)
async def apply_event(ctx: Context, scope: Scope, p: ProviderEventParams,
                      conn: asyncpg.Connection) -> ProviderEventApplied:
    return await apply(conn, scope, p)


async def apply(conn: asyncpg.Connection, scope: Scope, p: ProviderEventParams,
                ) -> ProviderEventApplied:
    """The event applied in the caller's transaction (the consumer's, the handler's)."""
    processor = domain.processor(p)
    said = domain.news(p, now())
    row = None if said is None else await store.lock_backed(
        conn, scope.org_id, scope.livemode, processor, said.provider_id)
    sub_id = None if row is None else row["id"]
    if not await store.claim(conn, scope.org_id, scope.livemode, processor,
                             p.providerEventId, p.type, sub_id):
        return ProviderEventApplied(applied=False, subscriptionId=sub_id, duplicate=True)
    changed = {} if row is None else domain.changes(row, said)
    if not changed:
        return ProviderEventApplied(applied=False, subscriptionId=sub_id)
    saved = await store.update(conn, scope.org_id, scope.livemode, sub_id, changed)
    await announce(conn, scope, saved,
                   "subscription." + domain.event_of(row["status"], saved["status"]))
    return ProviderEventApplied(applied=True, subscriptionId=sub_id)
