"""Subscription items (subscriptions.md §3.2): create, list, get, update, delete. Writes
honour Idempotency-Key (§7 R3) and announce `subscription_item.*` events. An item names a
subscription of the caller's organization and mode (OURS: 404 otherwise)."""

from __future__ import annotations

from typing import Any

import asyncpg

from contracts import Scope
from contracts.common import IdParams
from contracts.errors import not_found
from contracts.ids import new_id, rfc3339
from contracts.subscription_items import (
    SUBSCRIPTION_ITEM_CREATE,
    SUBSCRIPTION_ITEM_DELETE,
    SUBSCRIPTION_ITEM_GET,
    SUBSCRIPTION_ITEM_LIST,
    SUBSCRIPTION_ITEM_UPDATE,
    SUBSCRIPTION_ITEMS_PAGE,
    SubscriptionItem,
    SubscriptionItemCreateParams,
    SubscriptionItemDeleted,
    SubscriptionItemListParams,
    SubscriptionItemUpdateParams,
)
from services.runtime.bus import created, paged
from services.runtime.outbox import add_event
from services.runtime.service import Context, Router
from services.subscriptions.items import domain, store
from services.subscriptions.plans import store as plans

router = Router()
PLAN_NOT_FOUND = "plan not found"


@router.handler(SUBSCRIPTION_ITEM_CREATE, transaction=True)
async def create_item(ctx: Context, scope: Scope, p: SubscriptionItemCreateParams,
                      conn: asyncpg.Connection) -> Any:
    new = domain.new_item(p)
    customer = await _customer(conn, scope, new.subscription_id)
    unit_amount = 0
    if domain.prices_by_plan(new.billing_mode, new.plan_id):
        unit_amount = await plan_price(conn, new.plan_id)
        if unit_amount is None:
            raise not_found(PLAN_NOT_FOUND)
    row = await store.create(
        conn, scope.org_id, scope.livemode, new_id("si_"), subscription_id=new.subscription_id,
        price_id=new.price_id, plan_id=new.plan_id, meter_id=new.meter_id,
        quantity=new.quantity, billing_mode=new.billing_mode, unit_amount=unit_amount,
        metadata=new.metadata)
    return created(await _announce(conn, scope, customer, row, "subscription_item.created"))


@router.handler(SUBSCRIPTION_ITEM_LIST)
async def list_items(ctx: Context, scope: Scope, p: SubscriptionItemListParams) -> Any:
    limit, offset = SUBSCRIPTION_ITEMS_PAGE.apply(p.limit, p.offset)
    rows, total = await store.items(ctx.pool, scope.org_id, scope.livemode,
                                    p.subscriptionId.strip(), limit, offset)
    return paged([_item(r) for r in rows], total, offset, len(rows))


@router.handler(SUBSCRIPTION_ITEM_GET)
async def get_item(ctx: Context, scope: Scope, p: IdParams) -> SubscriptionItem:
    return _item(await _load(ctx.pool, scope, p.id))


@router.handler(SUBSCRIPTION_ITEM_UPDATE, transaction=True)
async def update_item(ctx: Context, scope: Scope, p: SubscriptionItemUpdateParams,
                      conn: asyncpg.Connection) -> SubscriptionItem:
    row = await _load(conn, scope, p.id, lock=True)
    changed = domain.changes(p)
    if domain.prices_by_plan(row["billing_mode"], row["plan_id"]):
        # The plan's price now: what its seats bill from here on (kept if the plan is gone).
        price = await plan_price(conn, row["plan_id"])
        changed["unit_amount"] = row["unit_amount"] if price is None else price
    if changed:
        row = await store.update(conn, scope.org_id, scope.livemode, row["id"], **changed)
    customer = await _customer(conn, scope, row["subscription_id"])
    return await _announce(conn, scope, customer, row, "subscription_item.updated")


@router.handler(SUBSCRIPTION_ITEM_DELETE, transaction=True)
async def delete_item(ctx: Context, scope: Scope, p: IdParams,
                      conn: asyncpg.Connection) -> SubscriptionItemDeleted:
    row = await _load(conn, scope, p.id, lock=True)
    await store.delete(conn, scope.org_id, scope.livemode, row["id"])
    customer = await _customer(conn, scope, row["subscription_id"])
    await _announce(conn, scope, customer, row, "subscription_item.deleted")
    return SubscriptionItemDeleted(deleted=True, id=row["id"])


async def plan_price(conn: asyncpg.Connection, plan_ref: str) -> int | None:
    """A plan's price per seat and interval (0 for a plan sold by contract), None when
    there is no such plan."""
    plan = await plans.resolve(conn, plan_ref)
    return None if plan is None else plan["price"] or 0


async def _customer(conn: asyncpg.Connection, scope: Scope, subscription_id: str) -> str:
    customer = await store.subscription_owner(conn, scope.org_id, scope.livemode,
                                              subscription_id)
    if customer is None:
        raise not_found(domain.SUBSCRIPTION_NOT_FOUND)
    return customer


async def _load(db: Any, scope: Scope, item_id: str, *, lock: bool = False) -> asyncpg.Record:
    row = await store.item(db, scope.org_id, scope.livemode, item_id.strip(), lock=lock)
    if row is None:
        raise not_found(domain.ITEM_NOT_FOUND)
    return row


async def _announce(conn: asyncpg.Connection, scope: Scope, customer: str, row: asyncpg.Record,
                    type: str) -> SubscriptionItem:
    item = _item(row)
    await add_event(conn, "subscriptions", type=type, object_type="subscription_item",
                    object_id=item.id, org_id=scope.org_id, livemode=scope.livemode,
                    customer_id=customer, data=item)
    return item


def _item(r: asyncpg.Record) -> SubscriptionItem:
    return SubscriptionItem(
        id=r["id"], subscriptionId=r["subscription_id"], billingMode=r["billing_mode"],
        quantity=r["quantity"], created=rfc3339(r["created_at"]), priceId=r["price_id"],
        planId=r["plan_id"], meterId=r["meter_id"], metadata=r["metadata"])
