"""Customer balances (metering-invoicing.md §2.7, §7): read a balance, adjust it (mint
class: the gateway admits only callers allowed to mint, and the handler checks again for
bus callers), list its transactions. Collection, voids and credit notes move balances through
`apply` in their own transactions."""

from __future__ import annotations

from typing import Any

import asyncpg

from contracts import Scope
from contracts.errors import forbidden
from contracts.ids import new_id, rfc3339
from contracts.invoicing import (
    BALANCE_TRANSACTION_LIST,
    BALANCE_TRANSACTIONS_PAGE,
    CUSTOMER_BALANCE_ADJUST,
    CUSTOMER_BALANCE_GET,
    BalanceAdjustmentParams,
    BalanceTransaction,
    BalanceTransactionListParams,
    CustomerBalance,
    CustomerBalanceQuery,
)
from contracts.rules import currency_of
from services.invoicing.customer_balance import domain, store
from services.runtime.bus import paged
from services.runtime.outbox import add_event
from services.runtime.service import Context, Router

router = Router()


@router.handler(CUSTOMER_BALANCE_GET)
async def get_balance(ctx: Context, scope: Scope, p: CustomerBalanceQuery) -> CustomerBalance:
    who, currency = domain.customer(p.customerId), currency_of(p.currency)
    amount = await store.balance(ctx.pool, scope.org_id, scope.livemode, who, currency)
    return CustomerBalance(customerId=who, currency=currency, balance=amount)


@router.handler(CUSTOMER_BALANCE_ADJUST, transaction=True)
async def adjust(ctx: Context, scope: Scope, p: BalanceAdjustmentParams,
                 conn: asyncpg.Connection) -> BalanceTransaction:
    change = domain.adjustment(p)
    if not scope.actor.may_mint:
        raise forbidden()
    made = await apply(conn, scope, change)
    assert made is not None  # an adjustment has no source reference
    return made


@router.handler(BALANCE_TRANSACTION_LIST)
async def list_transactions(ctx: Context, scope: Scope, p: BalanceTransactionListParams) -> Any:
    limit, offset = BALANCE_TRANSACTIONS_PAGE.apply(p.limit, p.offset)
    currency = currency_of(p.currency) if p.currency.strip() else ""
    rows, total = await store.transactions(ctx.pool, scope.org_id, scope.livemode,
                                           p.customerId.strip(), currency, limit, offset)
    return paged([transaction(r) for r in rows], total, offset, len(rows))


async def apply(conn: asyncpg.Connection, scope: Scope, change: domain.Change,
                ) -> BalanceTransaction | None:
    """`change` made in the caller's transaction, with its event; None when its source
    reference was applied before (nothing moves twice)."""
    row = await store.change(conn, scope.org_id, scope.livemode, new_id("cbtxn_"), change)
    if row is None:
        return None
    made = transaction(row)
    await add_event(conn, "invoicing", type="customer_balance.transaction.created",
                    object_type="balance_transaction", object_id=made.id,
                    org_id=scope.org_id, livemode=scope.livemode, customer_id=made.customerId,
                    data=made)
    return made


def transaction(r: asyncpg.Record) -> BalanceTransaction:
    return BalanceTransaction(
        id=r["id"], customerId=r["customer_id"], amount=r["amount"], currency=r["currency"],
        type=r["type"], endingBalance=r["ending_balance"], created=rfc3339(r["created_at"]),
        description=r["description"], invoiceId=r["invoice_id"],
        creditNoteId=r["credit_note_id"], sourceRef=r["source_ref"])
