"""Spend alert handlers (ledger.md §3.18–§3.21) and their evaluation after each usage debit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import asyncpg
import msgspec

from contracts import Reply, Scope
from contracts.alert_subjects import (
    LEDGER_SPEND_ALERT_CREATE,
    LEDGER_SPEND_ALERT_DELETE,
    LEDGER_SPEND_ALERT_LIST,
    LEDGER_SPEND_ALERT_UPDATE,
)
from contracts.alerts import (
    SPEND_ALERT_TRIGGERED,
    SpendAlert,
    SpendAlertCreateParams,
    SpendAlertDeleteParams,
    SpendAlertListParams,
    SpendAlertTriggered,
    SpendAlertUpdateParams,
)
from contracts.errors import Failure, not_found
from contracts.ids import new_id, rfc3339
from contracts.common import INT64_MAX
from contracts.limits import SPEND_ALERTS_PAGE
from services.ledger import alerts, alerts_store, domain
from services.runtime.bus import Service, created
from services.runtime.outbox import add_event


def register(svc: Service) -> None:
    @svc.handler(LEDGER_SPEND_ALERT_LIST, SpendAlertListParams)
    async def list_alerts(scope: Scope, p: SpendAlertListParams) -> list[SpendAlert]:
        user = domain.require_user(p.user, "user query parameter is required")
        alerts.require_own(scope.actor, user)
        limit, offset = SPEND_ALERTS_PAGE.apply(p.limit, p.offset)
        rows = await alerts_store.list_for_user(svc.pool, scope.org_id, scope.livemode, user,
                                                limit, offset)
        return [_alert(r) for r in rows]

    @svc.handler(LEDGER_SPEND_ALERT_CREATE, SpendAlertCreateParams)
    async def create_alert(scope: Scope, p: SpendAlertCreateParams) -> Reply:
        new = alerts.new_alert(p, scope.actor)
        row = await alerts_store.create(svc.pool, scope.org_id, scope.livemode,
                                        new_id("alert_"), new)
        return created(_alert(row))

    @svc.handler(LEDGER_SPEND_ALERT_UPDATE, SpendAlertUpdateParams)
    async def update_alert(scope: Scope, p: SpendAlertUpdateParams) -> SpendAlert:
        owner = alerts.owner_filter(scope.actor)
        try:
            alerts.check_update(p)
        except Failure:
            # The reference looks the alert up before reading the body: 404 comes first.
            if not await alerts_store.exists(svc.pool, scope.org_id, scope.livemode, p.id,
                                             owner):
                raise not_found(alerts.NOT_FOUND) from None
            raise
        row = await alerts_store.update(svc.pool, scope.org_id, scope.livemode, p.id, owner,
                                        p.title, p.threshold)
        if row is None:
            raise not_found(alerts.NOT_FOUND)
        return _alert(row)

    @svc.handler(LEDGER_SPEND_ALERT_DELETE, SpendAlertDeleteParams)
    async def delete_alert(scope: Scope, p: SpendAlertDeleteParams) -> Reply:
        owner = alerts.owner_filter(scope.actor)
        if not await alerts_store.delete(svc.pool, scope.org_id, scope.livemode, p.id, owner):
            raise not_found(alerts.NOT_FOUND)
        return Reply(status=204)  # the gateway sends no body


async def on_usage_batch(conn: asyncpg.Connection,
                         debits: Sequence[tuple[Scope, domain.Movement]]) -> None:
    """Count usage debits in their users' monthly spend and fire the alerts they cross, in
    the debits' own transaction (one round trip, plus one per alert that fires): an alert's
    `triggeredAt` and its event commit with the debit that crossed it."""
    amounts: dict[alerts_store.Account, list[int]] = {}  # each account's debits, in order
    scopes: dict[alerts_store.Account, Scope] = {}
    for scope, debit in debits:
        account = (scope.org_id, scope.livemode, debit.user_id, debit.currency)
        amounts.setdefault(account, []).append(debit.amount)
        scopes.setdefault(account, scope)
    rows = await alerts_store.add_spend(conn, {a: min(sum(v), INT64_MAX)
                                               for a, v in amounts.items()})
    candidates: dict[alerts_store.Account, list[tuple[str, int]]] = {}
    for r in rows:
        if r["id"] is not None:
            account = (r["org_id"], r["livemode"], r["user_id"], r["currency"])
            candidates.setdefault(account, []).append((r["id"], r["threshold"]))
    if not candidates:
        return
    totals = {(r["org_id"], r["livemode"], r["user_id"], r["currency"]): r for r in rows}
    for account, alerts_of_account in candidates.items():
        period, total = totals[account]["period"], totals[account]["amount"]
        for _, alert_id, spend in alerts.crossings(amounts[account], total, alerts_of_account):
            await _fire(conn, scopes[account], alert_id, spend, period)


async def _fire(conn: asyncpg.Connection, scope: Scope, alert_id: str, spend: int,
                period: date) -> None:
    for row in await alerts_store.mark_triggered(conn, scope.org_id, scope.livemode,
                                                 [alert_id], period):
        alert = _alert(row)
        await add_event(
            conn, "ledger", type=SPEND_ALERT_TRIGGERED, object_type="spend_alert",
            object_id=alert.id, org_id=scope.org_id, livemode=scope.livemode,
            customer_id=alert.userId,
            data=SpendAlertTriggered(**msgspec.structs.asdict(alert), spend=spend,
                                     period=alerts.period_label(period)))


def _alert(r: asyncpg.Record) -> SpendAlert:
    return SpendAlert(
        id=r["id"], userId=r["user_id"], title=r["title"], threshold=r["threshold"],
        currency=r["currency"],
        triggeredAt=rfc3339(r["triggered_at"]) if r["triggered_at"] else "",
        createdAt=rfc3339(r["created_at"]), updatedAt=rfc3339(r["updated_at"]))
