"""Pricing rules, the invoice preview and the upcoming invoice (metering-invoicing.md
§4.1–§4.5). Usage comes from metering's per-meter aggregates (the `api-usage` meter is never
among them, Q4); credits are previewed by the ledger, never consumed (M1)."""

from __future__ import annotations

import logging
from datetime import datetime

import asyncpg
import msgspec
from msgspec import UNSET

from contracts import Reply, Scope
from contracts.common import IdParams
from contracts.credits import CREDIT_GRANT_PREVIEW, CreditBurnParams
from contracts.errors import Failure, invalid, not_found, unavailable
from contracts.ids import new_id, rfc3339
from contracts.invoicing import (
    INVOICE_PREVIEW,
    INVOICE_UPCOMING,
    PRICING_RULE_CREATE,
    PRICING_RULE_DELETE,
    PRICING_RULE_LIST,
    InvoicePreview,
    InvoicePreviewParams,
    LineItem,
    PeriodInvoiceParams,
    PreviewLine,
    PricingRule,
    PricingRuleCreateParams,
    PricingRuleDeleted,
    PricingRuleDeleteParams,
    PricingRuleList,
    PricingRuleListParams,
    PricingTier,
    UpcomingInvoice,
    UpcomingInvoiceQuery,
)
from contracts.limits import PRICING_RULES_PAGE
from contracts.meter_events import API_USAGE_EVENT_NAME
from contracts.metering import METER_GET, USAGE_AGGREGATE, MeterGetParams, UsageAggregateParams
from contracts.rules import DEFAULT_CURRENCY, require_user
from contracts.subscriptions import SUBSCRIPTION_GET
from services.invoicing.invoices import domain as invoices
from services.invoicing.pricing import domain, store
from services.invoicing.renewal import domain as renewal
from services.runtime.bus import created, paged
from services.runtime.service import Context, Router

log = logging.getLogger(__name__)

SUBSCRIPTION_NOT_FOUND = "subscription not found"

router = Router()


# ---- pricing rules ----------------------------------------------------------------------


@router.handler(PRICING_RULE_CREATE, transaction=True)
async def create_rule(ctx: Context, scope: Scope, p: PricingRuleCreateParams,
                      conn: asyncpg.Connection) -> Reply:
    new = domain.new_rule(p)
    try:
        meter = await ctx.ask(METER_GET, scope, MeterGetParams(id=new.meter_id))
    except Failure as failure:
        if failure.error.status == 404:  # another organization's or mode's too
            raise invalid("meter not found", "meterId") from None
        raise
    if meter is None:
        raise unavailable()
    if meter.eventName == API_USAGE_EVENT_NAME:  # copies of prepaid usage (Q4)
        raise invalid("the api-usage meter is never invoiced", "meterId")
    row = await store.create(conn, scope.org_id, scope.livemode, new_id("prr_"), new)
    return created(_rule(row, listed=False))


@router.handler(PRICING_RULE_LIST)
async def list_rules(ctx: Context, scope: Scope, p: PricingRuleListParams) -> Reply:
    limit, offset = PRICING_RULES_PAGE.apply(p.limit, p.offset)
    rows, total = await store.rules(ctx.pool, scope.org_id, scope.livemode, p.meterId.strip(),
                                    p.planId.strip(), limit, offset)
    items = [_rule(r) for r in rows]
    return paged(PricingRuleList(items, len(items)), total, offset, len(items))


@router.handler(PRICING_RULE_DELETE, transaction=True)
async def delete_rule(ctx: Context, scope: Scope, p: PricingRuleDeleteParams,
                      conn: asyncpg.Connection) -> PricingRuleDeleted:
    if not await store.delete(conn, scope.org_id, scope.livemode, p.id):
        raise not_found(domain.NOT_FOUND)
    return PricingRuleDeleted(p.id, True)


# ---- preview and upcoming ---------------------------------------------------------------


@router.handler(INVOICE_PREVIEW)
async def preview(ctx: Context, scope: Scope, p: InvoicePreviewParams) -> InvoicePreview:
    user = require_user(p.userId, "userId is required", "userId")
    start, end = domain.period(p.periodStart, p.periodEnd)
    # The reference's window is closed at both ends here (§4.4).
    lines = await priced_usage(ctx, scope, user, start, end, end_inclusive=True)
    subtotal = domain.subtotal(lines)
    applied, due = await previewed_credits(ctx, scope, user, subtotal, DEFAULT_CURRENCY)
    return InvoicePreview(
        user, p.periodStart, p.periodEnd,
        [PreviewLine(line.usage.meterId, line.usage.meterName, line.usage.quantity,
                     _unit_price(line), line.amount, line.rule.model if line.rule else "")
         for line in lines],
        subtotal, applied, due, DEFAULT_CURRENCY)


@router.handler(INVOICE_UPCOMING)
async def upcoming(ctx: Context, scope: Scope, p: UpcomingInvoiceQuery) -> UpcomingInvoice:
    """§4.5: with a subscription, the invoice its current period would get if it renewed
    now (§9.8; its pending prorations are the subscriptions service's, not shown); without
    one, the reference's answer: all usage so far, no plan fee."""
    user = require_user(p.userId, "userId query parameter is required", "userId")
    if p.subscriptionId.strip():
        renewal_params = await _current_period(ctx, scope, user, p.subscriptionId.strip())
        when = renewal.period(renewal_params)
        lines = await period_lines(ctx, scope, renewal_params, when)
        currency = when.currency
    else:
        unset = rfc3339(None)
        lines = [LineItem(f"li_usage_{line.usage.meterId}", "usage",
                          f"{line.usage.meterName} usage", line.amount, line.usage.currency,
                          unset, unset, line.usage.meterId, line.usage.quantity,
                          _unit_price(line))
                 for line in await priced_usage(ctx, scope, user, None, None)]
        currency = DEFAULT_CURRENCY
    subtotal = invoices.subtotal(lines)
    applied, due = await previewed_credits(ctx, scope, user, subtotal, currency)
    return UpcomingInvoice(user, lines, subtotal, applied, due, currency)


async def _current_period(ctx: Context, scope: Scope, user: str, subscription_id: str,
                          ) -> PeriodInvoiceParams:
    """What a renewal of the subscription's current period would be asked; another user's
    subscription is not found, as another organization's is."""
    sub = await ctx.ask(SUBSCRIPTION_GET, scope, IdParams(id=subscription_id))
    if sub is None:
        raise unavailable()
    if sub.userId != user:
        raise not_found(SUBSCRIPTION_NOT_FOUND)
    return msgspec.convert(dict(
        subscriptionId=sub.id, userId=sub.userId, planId=sub.planId, planName=sub.plan.name,
        price=sub.plan.price, currency=sub.plan.currency, quantity=sub.quantity,
        periodStart=sub.currentPeriodStart, periodEnd=sub.currentPeriodEnd, collect=False),
        PeriodInvoiceParams)


async def priced_usage(ctx: Context, scope: Scope, user: str, start: datetime | None,
                       end: datetime | None, *, end_inclusive: bool = False,
                       plan_id: str = "") -> list[domain.PricedUsage]:
    """The user's usage in the window, a priced line per meter in meter creation order
    (§9.3); `plan_id` chooses the plan's rules. The end is exclusive unless said."""
    # Batched: a cycle's renewals ask for their periods' usage together.
    aggregate = await ctx.ask(USAGE_AGGREGATE, scope, UsageAggregateParams(
        userId=user, start=rfc3339(start) if start else "", end=rfc3339(end) if end else "",
        endInclusive=end_inclusive), timeout=ctx.settings.request_timeout_s, batched=True)
    if aggregate is None:
        raise unavailable()
    usages = aggregate.meters
    rows = await store.rules_of_meters(ctx.pool, scope.org_id, scope.livemode,
                                       [u.meterId for u in usages]) if usages else []
    rules: dict[str, list[PricingRule]] = {}
    for row in rows:
        rules.setdefault(row["meter_id"], []).append(_rule(row))
    return domain.priced(usages, rules, plan_id)


async def period_lines(ctx: Context, scope: Scope, p: PeriodInvoiceParams,
                       when: renewal.Period) -> list[LineItem]:
    """The lines of a subscription's period invoice (§9.8): the plan, licensed items, the
    usage of the period (of the metered items' meters when there are any, else of every
    meter, priced by the plan's rules) and the prorations given."""
    meters = renewal.metered(p.items)
    usage = [renewal.usage_line(line.usage.meterId, line.usage.meterName, line.usage.quantity,
                                _unit_price(line), line.amount, when)
             for line in await priced_usage(ctx, scope, when.user_id, when.start, when.end,
                                            plan_id=p.planId)
             if meters is None or line.usage.meterId in meters]
    return renewal.lines(renewal.plan_line(p, when), renewal.item_lines(p.items, when), usage,
                         renewal.proration_lines(p.prorations, when))


async def previewed_credits(ctx: Context, scope: Scope, user: str, subtotal: int,
                            currency: str) -> tuple[int, int]:
    """(credit applied, amount due) as the user's grants in `currency` would cover the
    subtotal now. The ledger's preview writes nothing; when it cannot answer, the preview
    is shown without credits (the reference's choice)."""
    if subtotal <= 0:
        return domain.due(subtotal, subtotal)
    try:
        result = await ctx.ask(CREDIT_GRANT_PREVIEW, scope, CreditBurnParams(
            userId=user, amount=subtotal, currency=currency))
    except Failure as failure:
        log.warning("credit preview refused for an invoice preview: %s", failure)
        result = None
    return domain.due(subtotal, subtotal if result is None else result.remaining)


# ---- encoding ---------------------------------------------------------------------------


def _unit_price(line: domain.PricedUsage) -> int:
    return line.rule.unitPrice if line.rule is not None else 0


def _rule(r: asyncpg.Record, *, listed: bool = True) -> PricingRule:
    tiers = r["tiers"]
    return PricingRule(
        id=r["id"], meterId=r["meter_id"], planId=r["plan_id"], model=r["model"],
        currency=r["currency"], unitPrice=r["unit_price"],
        tiers=msgspec.convert(tiers, list[PricingTier]) if tiers is not None else None,
        createdAt=rfc3339(r["created_at"]),
        updatedAt=rfc3339(r["updated_at"]) if listed else UNSET,
        unitPriceDecimal=r["unit_price_decimal"] or UNSET,
        packageSize=r["package_size"] or UNSET)
