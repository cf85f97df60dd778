"""Invoicing messages (metering-invoicing.md §2.3–§2.4, §4–§5, §10): pricing rules, the
invoice preview and the upcoming invoice; invoices and what other services ask about them.

Field names are the reference's JSON names. Response fields the reference leaves out when
empty are `UNSET` (or defaults of an `omit_defaults` struct) until set."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from contracts.common import Int64, Params
from contracts.endpoint import Endpoint
from contracts.limits import TIERS, Code, Id, UserId


class InvoicePaymentParams(Params):
    invoiceId: Id = ""


class InvoicePayment(msgspec.Struct):
    """The payment intent that collected a paid invoice: refunding the invoice refunds that
    intent (payments.md §4.4 DO). Invoicing refuses an unknown invoice (404 `invoice not
    found`) and one not paid (400 `can only refund paid invoices, current: <status>`)."""

    paymentIntentId: str


# Payments asks it for `POST /billing/refunds {invoiceId}`.
INVOICE_PAYMENT_GET = Endpoint("billing.invoicing.invoice_payment.get", InvoicePaymentParams,
                               InvoicePayment)


# ---- pricing rules, invoice preview, upcoming invoice (§2.3, §4.1–§4.5, §9.2–§9.4) --------


class PricingTier(msgspec.Struct):
    """One tier, in cents. `upTo` 0 = no end; otherwise the band's width (`tiered`) or the
    ceiling of the quantity (`volume`). `flat` is charged once when the tier applies.
    `priceDecimal` (decimal cents, up to 12 places) takes precedence over `price`."""

    upTo: Int64 = 0
    price: Int64 = 0
    flat: Int64 = 0
    priceDecimal: Code | UnsetType = UNSET


Tiers = Annotated[list[PricingTier], msgspec.Meta(max_length=TIERS)]


class PricingRuleCreateParams(Params):
    meterId: Id = ""
    planId: Id = ""
    model: Code = ""  # per_unit (default) | tiered | volume | package
    currency: Code = ""
    unitPrice: Int64 = 0  # cents per unit; per package for `package`
    unitPriceDecimal: Code = ""  # decimal cents, up to 12 places; wins over unitPrice
    packageSize: Int64 = 0  # units per package (`package` only)
    tiers: Tiers | None = None


class PricingRuleListParams(Params):
    meterId: Id = ""
    planId: Id = ""
    limit: int = 0  # ≤ 0: the default; capped (limits.PRICING_RULES_PAGE)
    offset: int = 0


class PricingRuleDeleteParams(Params):
    id: Id = ""  # from the path


class InvoicePreviewParams(Params):
    userId: UserId = ""
    periodStart: Code = ""  # RFC 3339 or YYYY-MM-DD (00:00 UTC); empty = unbounded
    periodEnd: Code = ""  # the same; the end is inclusive


class UpcomingInvoiceQuery(Params):
    userId: UserId = ""
    subscriptionId: Id = ""


class PricingRule(msgspec.Struct):
    id: str
    meterId: str
    planId: str
    model: str
    currency: str
    unitPrice: int
    tiers: list[PricingTier] | None
    createdAt: str
    updatedAt: str | UnsetType = UNSET  # in lists only, as in the reference
    unitPriceDecimal: str | UnsetType = UNSET
    packageSize: int | UnsetType = UNSET


class PricingRuleList(msgspec.Struct):
    rules: list[PricingRule]
    count: int  # rules returned


class PricingRuleDeleted(msgspec.Struct):
    id: str
    deleted: bool


class PreviewLine(msgspec.Struct):
    meterId: str
    meterName: str
    quantity: int
    unitCost: int  # the rule's unitPrice whatever its model; 0 without a rule
    totalCost: int
    model: str  # "" without a rule


class InvoicePreview(msgspec.Struct):
    userId: str
    periodStart: str  # as sent
    periodEnd: str
    lineItems: list[PreviewLine]
    subtotal: int
    creditApplied: int  # what the user's credit grants would cover; never consumed
    amountDue: int
    currency: str


class UpcomingLine(msgspec.Struct, omit_defaults=True):
    """A usage line in the invoice's line-item format (`li_usage_<meterId>`)."""

    id: str
    type: str
    description: str
    amount: int
    currency: str
    periodStart: str
    periodEnd: str
    meterId: str = ""
    quantity: int = 0
    unitPrice: int = 0


class UpcomingInvoice(msgspec.Struct):
    userId: str
    lineItems: list[UpcomingLine]
    subtotal: int
    creditApplied: int
    amountDue: int
    currency: str


PRICING_RULE_CREATE = Endpoint("billing.invoicing.pricing_rule.create",
                               PricingRuleCreateParams, PricingRule)
PRICING_RULE_LIST = Endpoint("billing.invoicing.pricing_rule.list", PricingRuleListParams,
                             PricingRuleList)
PRICING_RULE_DELETE = Endpoint("billing.invoicing.pricing_rule.delete",
                               PricingRuleDeleteParams, PricingRuleDeleted)
INVOICE_PREVIEW = Endpoint("billing.invoicing.invoice.preview", InvoicePreviewParams,
                           InvoicePreview)
INVOICE_UPCOMING = Endpoint("billing.invoicing.invoice.upcoming", UpcomingInvoiceQuery,
                            UpcomingInvoice)
