"""Spend alert handlers (ledger.md §3.18–§3.21) and their evaluation after each usage debit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import asyncpg
import msgspec

from contracts import Reply, Scope
from contracts.alerts import (
    SPEND_ALERT_CREATE,
    SPEND_ALERT_DELETE,
    SPEND_ALERT_LIST,
    SPEND_ALERT_TRIGGERED,
    SPEND_ALERT_UPDATE,
    SpendAlert,
    SpendAlertCreateParams,
    SpendAlertDeleteParams,
    SpendAlertListParams,
    SpendAlertTriggered,
    SpendAlertUpdateParams,
)
from contracts.common import INT64_MAX
from contracts.errors import Failure, not_found
from contracts.ids import new_id, rfc3339
from contracts.limits import SPEND_ALERTS_PAGE
from contracts.rules import require_user
from services.ledger.alerts import domain, store
from services.ledger.balances.domain import Movement
from services.runtime.bus import created, paged
from services.runtime.outbox import add_event
from services.runtime.service import Context, Router

router = Router()


@router.handler(SPEND_ALERT_LIST)
async def list_alerts(ctx: Context, scope: Scope, p: SpendAlertListParams) -> Reply:
    user = require_user(p.user, "user query parameter is required")
    domain.require_own(scope.actor, user)
    limit, offset = SPEND_ALERTS_PAGE.apply(p.limit, p.offset)
    rows, total = await store.list_for_user(ctx.pool, scope.org_id, scope.livemode, user,
                                            limit, offset)
    return paged([_alert(r) for r in rows], total, offset, len(rows))


@router.handler(SPEND_ALERT_CREATE)
async def create_alert(ctx: Context, scope: Scope, p: SpendAlertCreateParams) -> Reply:
    new = domain.new_alert(p, scope.actor)
    row = await store.create(ctx.pool, scope.org_id, scope.livemode,
                             new_id("alert_"), new)
    return created(_alert(row))


@router.handler(SPEND_ALERT_UPDATE)
async def update_alert(ctx: Context, scope: Scope, p: SpendAlertUpdateParams) -> SpendAlert:
    owner = domain.owner_filter(scope.actor)
    try:
        domain.check_update(p)
    except Failure:
        # The reference looks the alert up before reading the body: 404 comes first.
        if not await store.exists(ctx.pool, scope.org_id, scope.livemode, p.id,
                                  owner):
            raise not_found(domain.NOT_FOUND) from None
        raise
    row = await store.update(ctx.pool, scope.org_id, scope.livemode, p.id, owner,
                             p.title, p.threshold)
    if row is None:
        raise not_found(domain.NOT_FOUND)
    return _alert(row)


@router.handler(SPEND_ALERT_DELETE)
async def delete_alert(ctx: Context, scope: Scope, p: SpendAlertDeleteParams) -> Reply:
    owner = domain.owner_filter(scope.actor)
    if not await store.delete(ctx.pool, scope.org_id, scope.livemode, p.id, owner):
        raise not_found(domain.NOT_FOUND)
    return Reply(status=204)  # the gateway sends no body


async def on_usage_batch(conn: asyncpg.Connection,
                         debits: Sequence[tuple[Scope, Movement]]) -> None:
    """Count usage debits in their users' monthly spend and fire the alerts they cross, in
    the debits' own transaction (one round trip, plus one per alert that fires): an alert's
    `triggeredAt` and its event commit with the debit that crossed it."""
    amounts: dict[store.Account, list[int]] = {}  # each account's debits, in order
    scopes: dict[store.Account, Scope] = {}
    for scope, debit in debits:
        account = (scope.org_id, scope.livemode, debit.user_id, debit.currency)
        amounts.setdefault(account, []).append(debit.amount)
        scopes.setdefault(account, scope)
    rows = await store.add_spend(conn, {a: min(sum(v), INT64_MAX)
                                        for a, v in amounts.items()})
    candidates: dict[store.Account, list[tuple[str, int]]] = {}
    for r in rows:
        if r["id"] is not None:
            account = (r["org_id"], r["livemode"], r["user_id"], r["currency"])
            candidates.setdefault(account, []).append((r["id"], r["threshold"]))
    if not candidates:
        return
    totals = {(r["org_id"], r["livemode"], r["user_id"], r["currency"]): r for r in rows}
    for account, alerts_of_account in candidates.items():
        period, total = totals[account]["period"], totals[account]["amount"]
        for _, alert_id, spend in domain.crossings(amounts[account], total, alerts_of_account):
            await _fire(conn, scopes[account], alert_id, spend, period)


async def _fire(conn: asyncpg.Connection, scope: Scope, alert_id: str, spend: int,
                period: date) -> None:
    for row in await store.mark_triggered(conn, scope.org_id, scope.livemode,
                                                 [alert_id], period):
        alert = _alert(row)
        await add_event(
            conn, "ledger", type=SPEND_ALERT_TRIGGERED, object_type="spend_alert",
            object_id=alert.id, org_id=scope.org_id, livemode=scope.livemode,
            customer_id=alert.userId,
            data=SpendAlertTriggered(**msgspec.structs.asdict(alert), spend=spend,
                                     period=domain.period_label(period)))


def _alert(r: asyncpg.Record) -> SpendAlert:
    return SpendAlert(
        id=r["id"], userId=r["user_id"], title=r["title"], threshold=r["threshold"],
        currency=r["currency"],
        triggeredAt=rfc3339(r["triggered_at"]) if r["triggered_at"] else "",
        createdAt=rfc3339(r["created_at"]), updatedAt=rfc3339(r["updated_at"]))
