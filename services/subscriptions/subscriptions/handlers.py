"""Subscriptions (subscriptions.md §3.1.1–§3.1.6): create, list, get, change plan or
quantity, cancel, reactivate. Every change runs in one transaction under the subscription's
row lock, idempotent under `Idempotency-Key`, and announces itself through the outbox
(`subscription.<event>`, data = the subscription as answered)."""

from __future__ import annotations

from typing import Any

import asyncpg
from msgspec import UNSET

from contracts import Scope
from contracts.common import IdParams
from contracts.errors import conflict, not_found
from contracts.ids import new_id, now, rfc3339
from contracts.rules import user_id
from contracts.subscriptions import (
    SUBSCRIPTION_CANCEL,
    SUBSCRIPTION_CREATE,
    SUBSCRIPTION_GET,
    SUBSCRIPTION_LIST,
    SUBSCRIPTION_REACTIVATE,
    SUBSCRIPTION_UPDATE,
    SUBSCRIPTIONS_PAGE,
    ProrationItem,
    Subscription,
    SubscriptionCancelParams,
    SubscriptionCreateParams,
    SubscriptionList,
    SubscriptionListParams,
    SubscriptionPlan,
    SubscriptionUpdateParams,
)
from services.runtime.bus import created, paged
from services.runtime.outbox import add_event
from services.runtime.service import Context, Router
from services.subscriptions.plans import store as plans
from services.subscriptions.subscriptions import domain, store

router = Router()


@router.handler(SUBSCRIPTION_CREATE, transaction=True)
async def create(ctx: Context, scope: Scope, p: SubscriptionCreateParams,
                 conn: asyncpg.Connection) -> Any:
    ask = domain.create_request(p, user_id(p.userId))
    plan = await plans.resolve(conn, ask.plan_ref)
    if plan is None:
        raise not_found("plan not found")
    terms = domain.plan_terms(plan, ask.interval)
    sub = domain.start(terms, domain.seats(terms, ask.quantity), ask.trial_days, now())
    domain.require_mint(sub.amount, scope.actor.may_mint)
    if sub.amount > 0:
        await _one_paid_per_category(conn, scope, ask.user_id, terms.category, None)
    try:
        row = await store.create(conn, scope.org_id, scope.livemode, new_id("sub_"),
                                 ask.user_id, sub,
                                 default_payment_method=p.defaultPaymentMethod,
                                 metadata=p.metadata)
    except asyncpg.UniqueViolationError:  # a concurrent create won the category
        raise _second_paid(ask.user_id, terms.category, None) from None
    return created(await announce(conn, scope, row, "subscription.created"))


@router.handler(SUBSCRIPTION_LIST)
async def list_subscriptions(ctx: Context, scope: Scope, p: SubscriptionListParams) -> Any:
    limit, offset = SUBSCRIPTIONS_PAGE.apply(p.limit, p.offset)
    rows, total = await store.page(ctx.pool, scope.org_id, scope.livemode, user_id(p.userId),
                                   p.status.strip(), limit, offset)
    found = [view(r) for r in rows]
    return paged(SubscriptionList(subscriptions=found, count=len(found)), total, offset,
                 len(found))


@router.handler(SUBSCRIPTION_GET)
async def get(ctx: Context, scope: Scope, p: IdParams) -> Subscription:
    row = await store.get(ctx.pool, scope.org_id, scope.livemode, p.id)
    if row is None:
        raise not_found("subscription not found")
    return view(row)


@router.handler(SUBSCRIPTION_UPDATE, transaction=True)
async def update(ctx: Context, scope: Scope, p: SubscriptionUpdateParams,
                 conn: asyncpg.Connection) -> Subscription:
    row = await load(conn, scope, p.id)
    sub = store.sub_of(row)
    ref = p.planId.strip()
    terms = sub.plan
    if ref and ref != row["plan_id"]:
        plan = await plans.resolve(conn, ref)
        if plan is None:
            raise not_found("new plan not found")
        # The new plan is sold at the subscription's billing interval.
        terms = domain.plan_terms(plan, domain.billed_every(sub.plan))
    changed, proration = domain.change(sub, terms, p.quantity if p.quantity > 0 else None,
                                       p.prorate, now())
    if changed.amount > sub.amount:  # an upgrade is money owed too (§3.1.4 OURS)
        domain.require_mint(changed.amount, scope.actor.may_mint)
    if changed.amount > 0:
        await _one_paid_per_category(conn, scope, row["user_id"], changed.plan.category,
                                     row["id"])
    try:
        saved = await store.save(conn, scope.org_id, scope.livemode, row["id"], changed)
    except asyncpg.UniqueViolationError:
        raise _second_paid(row["user_id"], changed.plan.category, None) from None
    item = None
    if proration is not None:
        item = _item(await store.add_pending_item(conn, scope.org_id, scope.livemode,
                                                  new_id("li_proration_"), row["id"],
                                                  row["user_id"], proration))
    result = await announce(conn, scope, saved, "subscription.updated")
    if changed.plan.id != sub.plan.id:
        await add_event(conn, "subscriptions", type="subscription.plan_changed",
                        object_type="subscription", object_id=result.id,
                        org_id=scope.org_id, livemode=scope.livemode,
                        customer_id=result.userId, data=result)
    if item is not None:
        result.prorationItem = item
    return result


@router.handler(SUBSCRIPTION_CANCEL, transaction=True)
async def cancel(ctx: Context, scope: Scope, p: SubscriptionCancelParams,
                 conn: asyncpg.Connection) -> Subscription:
    row = await load(conn, scope, p.id)
    at_period_end = p.atPeriodEnd is UNSET or p.atPeriodEnd
    changed = domain.cancel(store.sub_of(row), at_period_end, now())
    saved = await store.save(conn, scope.org_id, scope.livemode, row["id"], changed)
    # A cancel at the period's end is a change; the end comes with the cycle.
    return await announce(conn, scope, saved,
                          "subscription.updated" if at_period_end else "subscription.canceled")


@router.handler(SUBSCRIPTION_REACTIVATE, transaction=True)
async def reactivate(ctx: Context, scope: Scope, p: IdParams,
                     conn: asyncpg.Connection) -> Subscription:
    row = await load(conn, scope, p.id)
    changed = domain.reactivate(store.sub_of(row))
    saved = await store.save(conn, scope.org_id, scope.livemode, row["id"], changed)
    return await announce(conn, scope, saved, "subscription.reactivated")


# ---- shared by the areas of the service ----------------------------------------------------


async def load(conn: asyncpg.Connection, scope: Scope, sub_id: str) -> asyncpg.Record:
    """The caller's subscription, locked for the transaction; 404 otherwise."""
    row = await store.lock_subscription(conn, scope.org_id, scope.livemode, sub_id)
    if row is None:
        raise not_found("subscription not found")
    return row


async def announce(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record,
                   event: str) -> Subscription:
    """The subscription as answered, with its event in the same transaction."""
    result = view(row)
    await add_event(conn, "subscriptions", type=event, object_type="subscription",
                    object_id=result.id, org_id=scope.org_id, livemode=scope.livemode,
                    customer_id=result.userId, data=result)
    return result


def view(r: asyncpg.Record) -> Subscription:
    plan = r["plan_snapshot"]
    trial = r["trial_start"] is not None
    return Subscription(
        id=r["id"], userId=r["user_id"], planId=r["plan_id"], status=r["status"],
        quantity=r["quantity"], currentPeriodStart=rfc3339(r["period_start"]),
        currentPeriodEnd=rfc3339(r["period_end"]),
        cancelAtPeriodEnd=r["cancel_at_period_end"], providerType=r["provider_type"],
        defaultPaymentMethod=r["default_payment_method"],
        plan=SubscriptionPlan(id=plan["id"], name=plan["name"], price=plan["price"],
                              currency=plan["currency"], interval=plan["interval"]),
        createdAt=rfc3339(r["created_at"]), updatedAt=rfc3339(r["updated_at"]),
        trialStart=rfc3339(r["trial_start"]) if trial else UNSET,
        trialEnd=rfc3339(r["trial_end"]) if trial else UNSET,
        canceledAt=_when(r["canceled_at"]), endedAt=_when(r["ended_at"]),
        metadata=UNSET if r["metadata"] is None else r["metadata"])


def _when(ts: Any) -> Any:
    return UNSET if ts is None else rfc3339(ts)


def _item(r: asyncpg.Record) -> ProrationItem:
    return ProrationItem(id=r["id"], type=r["type"], description=r["description"],
                         planId=r["plan_id"], planName=r["plan_name"], amount=r["amount"],
                         currency=r["currency"], periodStart=rfc3339(r["period_start"]),
                         periodEnd=rfc3339(r["period_end"]))


async def _one_paid_per_category(conn: asyncpg.Connection, scope: Scope, user: str,
                                 category: str, sub_id: str | None) -> None:
    existing = await store.paid_in_category(conn, scope.org_id, scope.livemode, user, category)
    if existing is not None and existing != sub_id:
        raise _second_paid(user, category, existing)


def _second_paid(user: str, category: str, existing: str | None) -> Exception:
    which = f" ({existing})" if existing else ""
    return conflict(f"{user} already has a paid {category} subscription{which};"
                    " change that subscription instead")
