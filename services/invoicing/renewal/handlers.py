"""The period invoice of a subscription (metering-invoicing.md §8.3, §9.8; subscriptions.md
§2.5), asked by the subscriptions service for each period due: built once per
(subscription, periodStart, periodEnd), finalized (numbered) as it is created, and collected
with the waterfall (attempt 1); concurrent renewals are opened together (`batched.py`).
Asked again — a second cycle runner, a manual renew, a retry after a timeout — it answers
the invoice made the first time and collects nothing.

Bus-only. The period is the renewal's idempotency key: the request's own key is not used."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import msgspec

from contracts import Scope
from contracts.errors import Failure, internal
from contracts.invoicing import (
    INVOICE_RENEW_PERIOD,
    INVOICE_RENEW_PERIODS,
    PeriodInvoice,
    PeriodInvoiceParams,
    PeriodInvoices,
    PeriodInvoicesParams,
    PeriodRenewed,
)
from services.invoicing.collection import handlers as collection
from services.invoicing.invoices import handlers as invoices
from services.invoicing.pricing.handlers import period_lines
from services.invoicing.renewal import domain
from services.invoicing.renewal.batched import Collected, Draft
from services.runtime.service import Context, Router

log = logging.getLogger(__name__)
router = Router()


@router.handler(INVOICE_RENEW_PERIOD)
async def renew_period(ctx: Context, scope: Scope, p: PeriodInvoiceParams) -> PeriodInvoice:
    when = domain.period(p)
    scope = msgspec.structs.replace(scope, idempotency_key=None, fingerprint=None)
    try:
        lines = await period_lines(ctx, scope, p, when)
    except Failure:
        # Periods are rarely invoiced twice, so they are not looked up first: opening finds
        # an earlier invoice. But one is the answer whatever its lines would be now (and
        # while metering does not answer).
        found = await ctx.state.period_invoice((scope.org_id, scope.livemode,
                                                when.subscription_id, when.start, when.end))
        if found is not None:
            return _earlier(found, scope)
        raise
    opened = await ctx.state.renewals.open(Draft(scope, when, lines, p.collect))
    if not opened.created:  # a concurrent renewal of the period made it first
        return _earlier(opened.row, scope)
    if opened.attempt is None:  # not to be collected
        return PeriodInvoice(opened.invoice, None, True)
    # The attempt was started in the transaction that made the invoice: should this
    # process stop before it ends, the recovery job resumes it, and no renewal starts another.
    attempt = await collection.collect(ctx, scope, opened.row, opened.attempt)
    return await ctx.state.settled_renewals.settle(Collected(scope, opened.row["id"], attempt))


@router.handler(INVOICE_RENEW_PERIODS)
async def renew_periods(ctx: Context, scope: Scope, p: PeriodInvoicesParams) -> PeriodInvoices:
    """A billing cycle's periods in one request: each renewed as `renew_period` renews it,
    all at once (they share the batches), each with its own answer or refusal."""

    async def renewed(period: PeriodInvoiceParams) -> PeriodRenewed:
        try:
            return PeriodRenewed(result=await renew_period(ctx, scope, period))
        except Failure as refused:
            return PeriodRenewed(error=refused.error)
        except Exception:
            log.exception("renewal of %s failed (request %s)", period.subscriptionId,
                          scope.request_id)
            return PeriodRenewed(error=internal())

    return PeriodInvoices(list(await asyncio.gather(*(renewed(x) for x in p.periods))))


def _earlier(row: asyncpg.Record, scope: Scope) -> PeriodInvoice:
    invoice = invoices.as_invoice(row, scope.livemode)
    return PeriodInvoice(invoice, domain.synthesized(invoice), False)
