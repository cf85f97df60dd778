"""Subscriptions: the SQL (schema `subscriptions`). Every query names the organization and
the mode. Other areas of the service (items, schedules, the cycle, gifts) change a
subscription the same way: `lock_subscription` in their transaction, the rules, `save`."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.runtime.db import fetch_page
from services.subscriptions.subscriptions.domain import PlanTerms, Proration, Sub

Db = asyncpg.Pool | asyncpg.Connection

COLUMNS = ("id, user_id, plan_id, plan_slug, plan_category, plan_snapshot, status, quantity,"
           " period_start, period_end, billing_anchor, cancel_at_period_end, canceled,"
           " canceled_at, ended_at, start_at, trial_start, trial_end, provider_type,"
           " provider_id, default_payment_method, current_invoice_id, metadata, version,"
           " created_at, updated_at")


def snapshot(plan: PlanTerms) -> dict[str, Any]:
    return {"id": plan.id, "name": plan.name, "price": plan.price, "currency": plan.currency,
            "interval": plan.interval, "intervalCount": plan.interval_count,
            "category": plan.category, "perUser": plan.per_user,
            "trialPeriodDays": plan.trial_period_days}


def terms(s: dict[str, Any]) -> PlanTerms:
    return PlanTerms(id=s["id"], name=s["name"], price=s["price"], currency=s["currency"],
                     interval=s["interval"], interval_count=s.get("intervalCount", 1),
                     category=s.get("category", ""), per_user=s.get("perUser", False),
                     trial_period_days=s.get("trialPeriodDays", 0))


def sub_of(r: asyncpg.Record) -> Sub:
    """The row as the rules see it."""
    return Sub(plan=terms(r["plan_snapshot"]), status=r["status"], quantity=r["quantity"],
               period_start=r["period_start"], period_end=r["period_end"],
               billing_anchor=r["billing_anchor"], start_at=r["start_at"],
               cancel_at_period_end=r["cancel_at_period_end"], canceled=r["canceled"],
               canceled_at=r["canceled_at"], ended_at=r["ended_at"],
               trial_start=r["trial_start"], trial_end=r["trial_end"],
               provider_type=r["provider_type"])


async def create(conn: asyncpg.Connection, org_id: str, livemode: bool, sub_id: str,
                 user_id: str, sub: Sub, *, default_payment_method: str,
                 metadata: dict[str, Any] | None) -> asyncpg.Record:
    """Raises asyncpg.UniqueViolationError when the customer already has a paid subscription
    of the plan's category."""
    return await conn.fetchrow(
        f"""insert into subscriptions.subscriptions (org_id, livemode, id, user_id, plan_id,
            plan_slug, plan_category, plan_snapshot, status, quantity, period_start, period_end,
            billing_anchor, start_at, trial_start, trial_end, provider_type,
            default_payment_method, metadata, created_at, updated_at)
        values ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                $17, $18, $13, $13)
        returning {COLUMNS}""",
        org_id, livemode, sub_id, user_id, sub.plan.id, sub.plan.category, snapshot(sub.plan),
        sub.status, sub.quantity, sub.period_start, sub.period_end, sub.billing_anchor,
        sub.start_at, sub.trial_start, sub.trial_end, sub.provider_type,
        default_payment_method, metadata)


async def get(db: Db, org_id: str, livemode: bool, sub_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"select {COLUMNS} from subscriptions.subscriptions"
        " where org_id = $1 and livemode = $2 and id = $3", org_id, livemode, sub_id)


async def lock_subscription(conn: asyncpg.Connection, org_id: str, livemode: bool,
                            sub_id: str) -> asyncpg.Record | None:
    """The row, locked until the caller's transaction ends: changes to one subscription
    take turns (no lost update between a PATCH, a cancel and a renewal)."""
    return await conn.fetchrow(
        f"select {COLUMNS} from subscriptions.subscriptions"
        " where org_id = $1 and livemode = $2 and id = $3 for update", org_id, livemode, sub_id)


async def save(conn: asyncpg.Connection, org_id: str, livemode: bool, sub_id: str,
               sub: Sub, **columns: Any) -> asyncpg.Record:
    """Every state column of `sub` written back (and `columns`, e.g. current_invoice_id),
    the version bumped. Raises asyncpg.UniqueViolationError when the change gives the
    customer a second paid subscription of a category."""
    extra = "".join(f", {name} = ${n}" for n, name in enumerate(columns, start=20))
    return await conn.fetchrow(
        f"""update subscriptions.subscriptions set plan_id = $4, plan_slug = $4,
            plan_category = $5, plan_snapshot = $6, status = $7, quantity = $8,
            period_start = $9, period_end = $10, billing_anchor = $11,
            cancel_at_period_end = $12, canceled = $13, canceled_at = $14, ended_at = $15,
            trial_start = $16, trial_end = $17, start_at = $18, provider_type = $19{extra},
            version = version + 1, updated_at = now()
        where org_id = $1 and livemode = $2 and id = $3 returning {COLUMNS}""",
        org_id, livemode, sub_id, sub.plan.id, sub.plan.category, snapshot(sub.plan),
        sub.status, sub.quantity, sub.period_start, sub.period_end, sub.billing_anchor,
        sub.cancel_at_period_end, sub.canceled, sub.canceled_at, sub.ended_at,
        sub.trial_start, sub.trial_end, sub.start_at, sub.provider_type, *columns.values())


async def paid_in_category(db: Db, org_id: str, livemode: bool, user_id: str,
                           category: str) -> str | None:
    """The id of the customer's paid, not-ended subscription of `category`, if any."""
    return await db.fetchval(
        "select id from subscriptions.subscriptions where org_id = $1 and livemode = $2"
        " and user_id = $3 and plan_category = $4 and ended_at is null"
        " and (plan_snapshot->>'price')::bigint > 0", org_id, livemode, user_id, category)


async def page(db: Db, org_id: str, livemode: bool, user_id: str, status: str, limit: int,
               offset: int) -> tuple[list[asyncpg.Record], int]:
    """A page, newest first (conventions §10.6), and how many match in all."""
    return await fetch_page(db,
        f"""select {COLUMNS}, count(*) over () as total from subscriptions.subscriptions
        where org_id = $1 and livemode = $2 and ($3 = '' or user_id = $3)
          and ($4 = '' or status = $4)
        order by created_at desc, id desc limit $5 offset $6""",
        org_id, livemode, user_id, status, limit, offset)


async def add_pending_item(conn: asyncpg.Connection, org_id: str, livemode: bool,
                           item_id: str, sub_id: str, user_id: str, item: Proration,
                           ) -> asyncpg.Record:
    return await conn.fetchrow(
        """insert into subscriptions.pending_invoice_items (org_id, livemode, id,
            subscription_id, user_id, description, plan_id, plan_name, amount, currency,
            period_start, period_end)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        returning id, type, description, plan_id, plan_name, amount, currency, period_start,
                  period_end""",
        org_id, livemode, item_id, sub_id, user_id, item.description, item.plan_id,
        item.plan_name, item.amount, item.currency, item.period_start, item.period_end)
