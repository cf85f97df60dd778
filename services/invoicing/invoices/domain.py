"""Invoices, pure (metering-invoicing.md §2.4, §5, §9.6, §9.7, §9.11): the state machine,
what a new draft and a new line are, the totals, the discount, tax and numbering. No I/O.

A refusal is a `Failure`: bad input 400; an action the invoice's status does not allow 409
(the issue's rule; the reference answered 400), with the reference's message."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import msgspec

from contracts import ErrorCode
from contracts.common import INT64_MAX, INT64_MIN
from contracts.errors import Failure, invalid
from contracts.ids import rfc3339
from contracts.invoicing import (
    LINE_ITEMS_BYTES,
    LINE_ITEMS_MAX,
    LINE_TYPES,
    DiscountParams,
    InvoiceCreateParams,
    LineItem,
    LineItemAddParams,
    TaxLine,
    TaxRateCreateParams,
)
from contracts.limits import in_range as instant_in_range
from contracts.rules import currency_of, require_user

DRAFT, OPEN, PAID, VOID, UNCOLLECTIBLE = "draft", "open", "paid", "void", "uncollectible"

INVOICE_NOT_FOUND = "invoice not found"
LINE_ITEM_NOT_FOUND = "line item not found"

_encode = msgspec.json.Encoder().encode
_REGION = re.compile(r"^[A-Z0-9]{1,10}$")
RATE_DIGITS = 10  # decimal places of a tax rate (0.08875 has 5)


def refused(message: str) -> Failure:
    """An action the invoice's status does not allow."""
    return Failure(ErrorCode.INVALID_STATE, 409, message)


def require_draft(status: str, message: str) -> None:
    if status != DRAFT:
        raise refused(message)


def finalizable(status: str) -> None:
    if status != DRAFT:
        raise refused(f"can only finalize draft invoices, current status: {status}")


def voidable(status: str) -> None:
    if status not in (DRAFT, OPEN):
        raise refused(f"can only void draft or open invoices, current status: {status}")


def abandonable(status: str) -> None:
    if status != OPEN:
        raise refused(f"can only mark open invoices uncollectible, current status: {status}")


def number_str(number: int) -> str:
    """§9.11: `INV-0001`; longer numbers unpadded (`INV-12345`); unnumbered drafts ""."""
    return f"INV-{number:04d}" if number > 0 else ""


# ---- drafts and lines ----------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    user_id: str
    customer_email: str
    subscription_id: str
    currency: str
    lines: list[LineItem]
    counter: int  # the last n of the `li_<invoice>_<n>` ids given
    metadata: dict[str, Any] | None


def line_id(invoice_id: str, n: int) -> str:
    return f"li_{invoice_id}_{n}"


def new_draft(p: InvoiceCreateParams, invoice_id: str) -> Draft:
    """§5.1: the customer is required; lines are kept as sent, except that a line without
    an id gets the next `li_<invoice>_<n>` and every line is in the invoice's currency."""
    user = require_user(p.userId, "userId is required", "userId")
    currency = currency_of(p.currency)
    lines, counter, seen = [], 0, set()
    for given in p.lineItems or ():
        kind = given.type.strip() or "one_off"
        if kind not in LINE_TYPES:
            raise invalid(f"line item type must be one of {', '.join(LINE_TYPES)}", "lineItems")
        if given.id:
            item_id = given.id
        else:
            counter += 1
            item_id = line_id(invoice_id, counter)
        if item_id in seen:
            raise invalid("duplicate line item id", "lineItems")
        seen.add(item_id)
        for when in (given.periodStart, given.periodEnd):
            if when is not None and not instant_in_range(when):
                raise invalid("lineItems: period out of range", "lineItems")
        lines.append(LineItem(
            id=item_id, type=kind, description=given.description, amount=given.amount,
            currency=currency, periodStart=rfc3339(given.periodStart),
            periodEnd=rfc3339(given.periodEnd), meterId=given.meterId,
            quantity=given.quantity, unitPrice=given.unitPrice, planId=given.planId,
            planName=given.planName))
    require_size(lines)
    return Draft(user, p.customerEmail.strip(), p.subscriptionId.strip(), currency, lines,
                 counter, p.metadata)


def new_line(p: LineItemAddParams, invoice_id: str, n: int, currency: str) -> LineItem:
    """§5.7: the amount as given, or quantity × unit price when no amount is given; the type
    from what the line names (a plan wins over a meter)."""
    if not p.description:
        raise invalid("description is required", "description")
    amount = p.amount
    if amount == 0 and p.quantity > 0 and p.unitPrice > 0:
        amount = in_range(p.quantity * p.unitPrice)
    kind = "subscription" if p.planId else "usage" if p.meterId else "one_off"
    zero = rfc3339(None)
    return LineItem(id=line_id(invoice_id, n), type=kind, description=p.description,
                    amount=amount, currency=currency, periodStart=zero, periodEnd=zero,
                    meterId=p.meterId, quantity=p.quantity, unitPrice=p.unitPrice,
                    planId=p.planId)


def with_line(lines: list[LineItem], line: LineItem) -> list[LineItem]:
    added = [*lines, line]
    require_size(added)
    return added


def require_size(lines: list[LineItem]) -> None:
    """An invoice's lines within its limits: LINE_ITEMS_MAX of them, LINE_ITEMS_BYTES."""
    if len(lines) > LINE_ITEMS_MAX:
        raise invalid(f"an invoice holds at most {LINE_ITEMS_MAX} line items", "lineItems")
    if len(_encode(lines)) > LINE_ITEMS_BYTES:
        raise invalid(f"lineItems: at most {LINE_ITEMS_BYTES} bytes as JSON", "lineItems")


def without_line(lines: list[LineItem], item_id: str) -> list[LineItem]:
    """§5.8: every line with that id goes (ids are unique here, but a draft created with
    repeated ids by an older version would lose them all, as the reference did)."""
    kept = [line for line in lines if line.id != item_id]
    if len(kept) == len(lines):
        raise Failure(ErrorCode.NOT_FOUND, 404, LINE_ITEM_NOT_FOUND)
    return kept


# ---- totals, discount, tax -----------------------------------------------------------------


def in_range(amount: int) -> int:
    """§1.6: an amount outside signed 64 bits is refused, never wrapped."""
    if not INT64_MIN <= amount <= INT64_MAX:
        raise invalid("amount out of range")
    return amount


def subtotal(lines: list[LineItem]) -> int:
    return in_range(sum(line.amount for line in lines))


def amount_due(subtotal: int, tax: int, discount: int, credit_applied: int) -> int:
    """§9.6: max(0, subtotal + tax − discount − creditApplied)."""
    return in_range(max(0, subtotal + tax - discount - credit_applied))


def discount(p: DiscountParams, subtotal: int) -> tuple[int, str]:
    """§5.9 Δ: a positive amount, capped at the subtotal when applied (never below 0); it
    replaces any earlier one. The coupon is only a label."""
    if p.discountAmount <= 0 and not p.couponId:
        raise invalid("discountAmount or couponId is required", "discountAmount")
    if p.discountAmount <= 0:
        raise invalid("discountAmount must be positive", "discountAmount")
    amount = min(p.discountAmount, max(subtotal, 0))
    name = p.discountName or (f"coupon:{p.couponId}" if p.couponId else "")
    return amount, name


@dataclass(frozen=True)
class Address:
    """Where tax is charged: country and state compared upper-cased (§9.7 Δ)."""

    country: str
    state: str = ""
    postalCode: str = ""
    city: str = ""


def address(country: str, state: str, postal_code: str, city: str) -> Address:
    country = country.strip().upper()
    if not country:
        raise invalid("country query parameter is required for tax calculation", "country")
    return Address(country, state.strip().upper(), postal_code.strip(), city.strip())


@dataclass(frozen=True)
class Rate:
    id: str
    country: str
    state: str
    rate: Decimal
    name: str


def jurisdiction(country: str, state: str) -> str:
    return f"{country}-{state}" if state else country


def tax_lines(rates: list[Rate], where: Address, subtotal: int, discount: int,
              ) -> list[TaxLine]:
    """§9.7 Δ: every rate of the country and of the state stacks, country-wide first, each
    `round_half_up(base × rate)` on the base `max(0, subtotal − discount)`."""
    base = Decimal(max(0, subtotal - discount))
    matched = [r for r in rates if r.country == where.country and r.state in ("", where.state)]
    matched.sort(key=lambda r: r.state != "")
    return [TaxLine(taxRateId=r.id, description=r.name,
                    amount=in_range(int((base * r.rate).to_integral_value(ROUND_HALF_UP))),
                    rate=float(r.rate), inclusive=False,
                    jurisdiction=jurisdiction(r.country, r.state)) for r in matched]


def tax_percent(total_tax: int, subtotal: int) -> Decimal | None:
    """tax / subtotal × 100, kept (not answered, as in the reference); None: no subtotal."""
    return Decimal(total_tax) * 100 / Decimal(subtotal) if subtotal > 0 else None


def new_tax_rate(p: TaxRateCreateParams) -> Rate:
    country, state = p.country.strip().upper(), p.state.strip().upper()
    if not country:
        raise invalid("country is required", "country")
    if not _REGION.match(country):
        raise invalid("country must be a code of letters and digits", "country")
    if state and not _REGION.match(state):
        raise invalid("state must be a code of letters and digits", "state")
    if not p.rate.is_finite() or not Decimal(0) <= p.rate <= Decimal(1):
        raise invalid("rate must be a fraction between 0 and 1", "rate")
    if -p.rate.normalize().as_tuple().exponent > RATE_DIGITS:
        raise invalid(f"rate: at most {RATE_DIGITS} decimal places", "rate")
    name = p.name.strip()
    if not name:
        raise invalid("name is required", "name")
    return Rate("", country, state, p.rate, name)
