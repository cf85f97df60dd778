"""The period invoice of a subscription, pure (metering-invoicing.md §9.8, §9.12;
subscriptions.md §2.5): what the subscriptions service may ask for, and the lines of the
invoice — the plan × seats, priced licensed items, the period's usage, prorations. No I/O.

Periods are half-open, `[periodStart, periodEnd)`: an event stamped at the end belongs to the
next period (§9.3 Δ)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts.errors import invalid
from contracts.ids import rfc3339
from contracts.invoicing import (
    Collection,
    Invoice,
    LineItem,
    PeriodInvoiceParams,
    PeriodItem,
    ProrationLine,
)
from contracts.limits import in_range as instant_in_range
from contracts.rules import currency_of, require_user
from services.invoicing.invoices.domain import PAID, in_range, require_size

LICENSED, METERED = "licensed", "metered"


@dataclass(frozen=True, slots=True)
class Period:
    """A checked request: who, which subscription, which window, in which currency."""

    subscription_id: str
    user_id: str
    currency: str
    start: datetime
    end: datetime


def period(p: PeriodInvoiceParams) -> Period:
    """The request as billed, or the first thing wrong with it (400)."""
    subscription = p.subscriptionId.strip()
    if not subscription:
        raise invalid("subscriptionId is required", "subscriptionId")
    user = require_user(p.userId, "userId is required", "userId")
    if p.periodStart is None or p.periodEnd is None:
        raise invalid("periodStart and periodEnd are required", "periodStart")
    if not (instant_in_range(p.periodStart) and instant_in_range(p.periodEnd)):
        raise invalid("period out of range", "periodStart")
    if p.periodEnd <= p.periodStart:
        raise invalid("periodEnd must be after periodStart", "periodEnd")
    if p.price < 0:
        raise invalid("price must be non-negative", "price")
    if p.quantity < 0:
        raise invalid("quantity must be non-negative", "quantity")
    for item in p.items:
        if item.billingMode not in (LICENSED, METERED):
            raise invalid("items: billingMode must be licensed or metered", "items")
        if item.quantity < 0 or item.unitAmount < 0:
            raise invalid("items: quantity and unitAmount must be non-negative", "items")
        if item.billingMode == METERED and not item.meterId.strip():
            raise invalid("items: a metered item needs a meterId", "items")
    return Period(subscription, user, currency_of(p.currency), p.periodStart, p.periodEnd)


def metered(items: list[PeriodItem]) -> frozenset[str] | None:
    """The meters whose usage the invoice bills: those the metered items name, or every
    meter of the user (None) when no item is metered (the reference's renewal)."""
    meters = frozenset(i.meterId.strip() for i in items if i.billingMode == METERED)
    return meters or None


def plan_line(p: PeriodInvoiceParams, when: Period) -> list[LineItem]:
    """§9.8 Δ: price × max(1, quantity), the seats and unit price shown when more than one;
    a free plan has no line."""
    if p.price <= 0:
        return []
    seats = max(1, p.quantity)
    extra = dict(quantity=seats, unitPrice=p.price) if seats > 1 else {}
    return [LineItem(
        id=f"li_plan_{p.planId}", type="subscription",
        description=f"{p.planName} subscription", amount=in_range(p.price * seats),
        currency=when.currency, periodStart=rfc3339(when.start), periodEnd=rfc3339(when.end),
        planId=p.planId, planName=p.planName, **extra)]


def item_lines(items: list[PeriodItem], when: Period) -> list[LineItem]:
    """A line per licensed item with a unit amount: unitAmount × quantity (its id from the
    item's place, stable for the period)."""
    return [LineItem(
        id=f"li_item_{n}", type="subscription",
        description=item.description or "Subscription item",
        amount=in_range(item.unitAmount * item.quantity), currency=when.currency,
        periodStart=rfc3339(when.start), periodEnd=rfc3339(when.end), quantity=item.quantity,
        unitPrice=item.unitAmount, planId=item.planId)
        for n, item in enumerate(items, start=1)
        if item.billingMode == LICENSED and item.unitAmount > 0]


def usage_line(meter_id: str, meter_name: str, quantity: int, unit_price: int, amount: int,
               when: Period) -> LineItem:
    """§9.3's invoice line for a meter's usage in the period."""
    return LineItem(
        id=f"li_usage_{meter_id}", type="usage", description=f"{meter_name} usage",
        amount=amount, currency=when.currency, periodStart=rfc3339(when.start),
        periodEnd=rfc3339(when.end), meterId=meter_id, quantity=quantity,
        unitPrice=unit_price)


def proration_lines(prorations: list[ProrationLine], when: Period) -> list[LineItem]:
    """§9.12: as the subscriptions service computed them, in the invoice's currency; a
    line without its own window covers the period."""
    return [LineItem(
        id=p.id or f"li_proration_{n}", type="proration",
        description=p.description or f"Proration: {p.planName}", amount=p.amount,
        currency=when.currency,
        periodStart=rfc3339(p.periodStart or when.start),
        periodEnd=rfc3339(p.periodEnd or when.end), planId=p.planId, planName=p.planName)
        for n, p in enumerate(prorations, start=1)]


def lines(*parts: list[LineItem]) -> list[LineItem]:
    """The invoice's lines in order, each id once, within an invoice's limits."""
    joined = [line for part in parts for line in part]
    if len({line.id for line in joined}) != len(joined):
        raise invalid("duplicate line item id", "prorations")
    require_size(joined)
    return joined


def synthesized(invoice: Invoice) -> Collection:
    """subscriptions.md §2.5 OURS: what an earlier renewal collected, read off its invoice
    (no new collection)."""
    return Collection(success=invoice.status == PAID, creditUsed=invoice.creditApplied,
                      amountCharged=invoice.amountPaid)
