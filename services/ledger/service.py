"""Ledger request handlers: decode (done by the runtime), call the domain, encode."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from contracts import Scope, subjects
from contracts.ledger import (
    Balance,
    BalanceAll,
    BalanceEntry,
    BalanceQuery,
    DepositParams,
    DepositResult,
    TransactionItem,
    TransactionList,
    TransactionListParams,
    UsageItem,
    UsageList,
    UsageListParams,
    UsageRecordParams,
    UsageResult,
    UsageSkipped,
)
from services.ledger import domain, store
from services.runtime.bus import Service, created
from services.runtime.config import Settings
from services.runtime.ids import now, rfc3339, rfc3339_seconds

MIGRATIONS = Path(__file__).parent / "migrations"


def create(settings: Settings) -> Service:
    svc = Service("ledger", settings, migrations=MIGRATIONS)

    @svc.handler(subjects.LEDGER_BALANCE_GET, BalanceQuery)
    async def get_balance(scope: Scope, p: BalanceQuery) -> Balance:
        user = domain.require_user(p.user, "user query parameter is required")
        currency = domain.currency_of(p.currency)
        bal, holds = await store.balance(svc.pool, scope.org_id, scope.livemode, user, currency)
        return Balance(user, currency, bal, holds, domain.available(bal, holds))

    @svc.handler(subjects.LEDGER_BALANCE_ALL, BalanceQuery)
    async def get_balance_all(scope: Scope, p: BalanceQuery) -> BalanceAll:
        user = domain.require_user(p.user, "user query parameter is required")
        rows = await store.balances(svc.pool, scope.org_id, scope.livemode, user)
        return BalanceAll(user, [
            BalanceEntry(r["currency"], r["balance"], r["holds"],
                         domain.available(r["balance"], r["holds"])) for r in rows])

    @svc.handler(subjects.LEDGER_DEPOSIT_CREATE, DepositParams, transaction=True)
    async def create_deposit(scope: Scope, p: DepositParams, conn: asyncpg.Connection):
        movement = domain.deposit(p, now())
        domain.require_mint(scope.actor)
        tx_id, _ = await store.post(conn, scope.org_id, scope.livemode, movement)
        return created(DepositResult(
            transactionId=tx_id, user=movement.user_id, amount=movement.amount,
            currency=movement.currency, type=movement.type, tags=movement.tags,
            expiresAt=rfc3339(movement.expires_at) if movement.expires_at else None))

    @svc.handler(subjects.LEDGER_USAGE_RECORD, UsageRecordParams, transaction=True,
                 natural_key=lambda p: p.requestId and "usage:" + p.requestId)
    async def record_usage(scope: Scope, p: UsageRecordParams, conn: asyncpg.Connection):
        movement = domain.usage_debit(p)
        if movement is None:
            return UsageSkipped(user=p.user, amount=0, status="skipped")
        tx_id, _ = await store.post(conn, scope.org_id, scope.livemode, movement)
        return created(UsageResult(tx_id, movement.user_id, movement.amount,
                                   movement.currency, movement.type))

    @svc.handler(subjects.LEDGER_USAGE_LIST, UsageListParams)
    async def list_usage(scope: Scope, p: UsageListParams) -> UsageList:
        user = domain.require_user(p.user, "user query parameter is required")
        currency = domain.currency_of(p.currency) if p.currency else ""
        limit, offset = domain.page(p.limit, p.offset, default_limit=domain.MAX_PAGE)
        rows = await store.usage(svc.pool, scope.org_id, scope.livemode, user, currency,
                                 limit, offset)
        items = [UsageItem(r["id"], r["amount"], r["currency"], r["notes"],
                           r["metadata"] or {}, rfc3339(r["created_at"])) for r in rows]
        return UsageList(user, len(items), items)

    @svc.handler(subjects.LEDGER_TRANSACTION_LIST, TransactionListParams)
    async def list_transactions(scope: Scope, p: TransactionListParams) -> TransactionList:
        user = domain.require_user(p.user, "user query parameter is required")
        currency = domain.currency_of(p.currency) if p.currency.strip() else ""
        limit, offset = domain.page(p.limit, p.offset, default_limit=100)
        rows, total = await store.transactions(svc.pool, scope.org_id, scope.livemode, user,
                                               currency, limit, offset)
        items = [TransactionItem(
            id=r["id"], type=r["type"], amount=r["amount"], currency=r["currency"],
            createdAt=rfc3339_seconds(r["created_at"]), tags=r["tags"], notes=r["notes"],
            metadata=r["metadata"] or None,
            expiresAt=rfc3339_seconds(r["expires_at"]) if r["expires_at"] else None,
        ) for r in rows]
        return TransactionList(items, total, user)

    return svc
