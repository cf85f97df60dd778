"""The period invoice of a subscription (metering-invoicing.md §8.3, §9.8; subscriptions.md
§2.5), asked by the subscriptions service for each period due: built once per
(subscription, periodStart, periodEnd), finalized (numbered) as it is created, and collected
with the waterfall (attempt 1). Asked again — a second cycle runner, a manual renew, a retry
after a timeout — it answers the invoice made the first time and collects nothing.

Bus-only. The period is the renewal's idempotency key: the request's own key is not used."""

from __future__ import annotations

import asyncpg
import msgspec

from contracts import Scope
from contracts.ids import new_id
from contracts.invoicing import (
    INVOICE_RENEW_PERIOD,
    PeriodInvoice,
    PeriodInvoiceParams,
)
from services.invoicing.collection import handlers as collection
from services.invoicing.invoices import domain as invoices_domain
from services.invoicing.invoices import handlers as invoices
from services.invoicing.invoices import store
from services.invoicing.pricing.handlers import period_lines
from services.invoicing.renewal import domain
from services.runtime.service import Context, Router

router = Router()


@router.handler(INVOICE_RENEW_PERIOD)
async def renew_period(ctx: Context, scope: Scope, p: PeriodInvoiceParams,
                       ) -> PeriodInvoice | bytes:
    when = domain.period(p)
    scope = msgspec.structs.replace(scope, idempotency_key=None, fingerprint=None)
    org, mode = scope.org_id, scope.livemode
    found = await store.period_invoice(ctx.pool, org, mode, when.subscription_id, when.start,
                                       when.end)
    if found is not None:
        return _earlier(found, scope)
    lines = await period_lines(ctx, scope, p, when)
    subtotal = invoices_domain.subtotal(lines)
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await store.create_for_period(
            conn, org, mode, new_id("inv_"), when.subscription_id, when.user_id, when.currency,
            when.start, when.end, msgspec.to_builtins(lines), subtotal,
            invoices_domain.amount_due(subtotal, 0, 0, 0))
        if row is None:  # a concurrent renewal of the period made it first
            return _earlier(await store.period_invoice(conn, org, mode, when.subscription_id,
                                                       when.start, when.end), scope)
        await invoices.announce(conn, scope, row, "invoice.created")
        row = await _finalized(conn, scope, row)
        invoice = await invoices.announce(conn, scope, row, "invoice.finalized")
        if not p.collect:
            return PeriodInvoice(invoice, None, True)
        # Started in the transaction that made the invoice: should this process stop
        # before the attempt ends, the recovery job resumes it, and no renewal starts another.
        attempt = await collection.begin(conn, scope, row)
    return await invoices.settle(ctx, scope, row, attempt,
                                 lambda paid, outcome: PeriodInvoice(paid, outcome, True))


async def _finalized(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record,
                     ) -> asyncpg.Record:
    """Open, with the organization's next number (§9.11), in the creating transaction."""
    number = await store.next_number(conn, scope.org_id, scope.livemode, "invoice")
    return await store.update(conn, scope.org_id, scope.livemode, row["id"],
                              status=invoices_domain.OPEN, number=number)


def _earlier(row: asyncpg.Record, scope: Scope) -> PeriodInvoice:
    invoice = invoices.as_invoice(row, scope.livemode)
    return PeriodInvoice(invoice, domain.synthesized(invoice), False)
