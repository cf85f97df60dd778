"""Invoicing messages (metering-invoicing.md §2.3–§2.4, §4–§5, §10): what other services
ask of invoicing, and its areas' endpoints, each area in a section of its own — pricing
rules, the invoice preview and the upcoming invoice; invoices.

Field names are the reference's JSON names. Response fields the reference leaves out when
empty are `UNSET` (or defaults of an `omit_defaults` struct) until set."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from contracts import BusError
from contracts.common import IdParams, Int64, Params
from contracts.endpoint import Endpoint
from contracts.limits import (
    TIERS,
    Code,
    Id,
    Metadata,
    Name,
    Notes,
    Page,
    UserId,
    require_small_json,
)


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

# ---- invoices (metering-invoicing.md §2.4, §5.0–§5.4, §5.6–§5.10) ----------------------------
# Drafts, their lines, discount and tax; finalize (numbered), void; the PDF; the tax rates an
# organization charges. Field names are the reference's; keys it emits only when set are
# `UNSET`.

LINE_TYPES = ("subscription", "usage", "one_off", "proration")
INVOICE_STATUSES = ("draft", "open", "paid", "void", "uncollectible")
LINE_ITEMS_MAX = 100  # lines on one invoice
# What an invoice's lines may weigh as JSON, as stored and answered: a page of invoices
# (INVOICES_PAGE) with every other field at its limit still fits in one bus message
# (limits.py; tests/gateway/test_integrity_limits.py).
LINE_ITEMS_BYTES = 32 * 1024  # 100 lines with descriptions of about 150 characters
INVOICES_PAGE = Page(20, 20)

Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]  # RFC 3339 with an offset


class LineItemInput(msgspec.Struct, omit_defaults=True):
    """A line as a client sends it with a new draft (§5.1): kept as sent, except that a line
    without an id gets one and its currency is the invoice's."""

    id: Id = ""
    type: Code = ""  # one of LINE_TYPES; empty: one_off
    description: Notes = ""
    meterId: Id = ""
    quantity: Int64 = 0
    unitPrice: Int64 = 0
    planId: Id = ""
    planName: Name = ""
    amount: Int64 = 0
    periodStart: Timestamp | None = None
    periodEnd: Timestamp | None = None


class LineItem(msgspec.Struct, omit_defaults=True):
    """A line as stored and answered; the starred fields of §2.4 are left out when empty and
    the periods are always there (`0001-01-01T00:00:00Z` when unset)."""

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
    planId: str = ""
    planName: str = ""


class InvoiceCreateParams(Params):
    userId: UserId = ""
    customerEmail: Name = ""
    subscriptionId: Id = ""
    currency: Code = ""
    lineItems: Annotated[list[LineItemInput], msgspec.Meta(max_length=LINE_ITEMS_MAX)] | None = None
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        require_small_json("metadata", self.metadata)


class InvoiceListParams(Params):
    userId: UserId = ""
    status: Code = ""
    subscriptionId: Id = ""
    limit: int = 0  # ≤ 0: the default; capped (INVOICES_PAGE)
    offset: int = 0



class LineItemAddParams(Params):
    id: Id = ""  # the invoice, from the path
    description: Notes = ""
    amount: Int64 = 0
    quantity: Int64 = 0
    unitPrice: Int64 = 0
    meterId: Id = ""
    planId: Id = ""


class LineItemRemoveParams(Params):
    id: Id = ""  # the invoice, from the path
    itemId: Id = ""  # from the path


class DiscountParams(Params):
    id: Id = ""  # from the path
    couponId: Id = ""  # a label only: coupons are not looked up
    discountAmount: Int64 = 0
    discountName: Name = ""


class TaxParams(Params):
    """The address from the query string (§5.10)."""

    id: Id = ""  # from the path
    country: Code = ""
    state: Code = ""
    postalCode: Code = ""
    city: Name = ""


class Invoice(msgspec.Struct):
    """§5.0: these keys always; `dueDate`, `paidAt`, `voidedAt` only when set; then the
    additive ones (`discountName`, `amountRemaining`, `metadata`, `livemode`)."""

    id: str
    userId: str
    customerEmail: str
    subscriptionId: str
    periodStart: str
    periodEnd: str
    subtotal: int
    tax: int
    discount: int
    creditApplied: int
    amountDue: int
    amountPaid: int
    currency: str
    status: str
    paymentMethod: str
    paymentRef: str
    number: int
    numberStr: str
    attemptCount: int
    lineItems: list[LineItem]  # [] rather than the reference's null (§5.0 Δ)
    createdAt: str
    updatedAt: str
    discountName: str
    amountRemaining: int
    livemode: bool
    metadata: Metadata | UnsetType = UNSET
    dueDate: str | UnsetType = UNSET
    paidAt: str | UnsetType = UNSET
    voidedAt: str | UnsetType = UNSET


class InvoiceList(msgspec.Struct):
    invoices: list[Invoice]
    count: int


class TaxLine(msgspec.Struct):
    taxRateId: str
    description: str
    amount: int
    rate: float
    inclusive: bool
    jurisdiction: str


class TaxResult(msgspec.Struct):
    invoice: Invoice
    taxLines: list[TaxLine]
    totalTax: int


class InvoiceDocument(msgspec.Struct):
    """A file the gateway answers as it is (a `document` route): the invoice's PDF."""

    filename: str
    contentType: str
    content: bytes


class TaxRateCreateParams(Params):
    """A rate the organization charges in a country, or in one of its states (§2.8)."""

    country: Code = ""
    state: Code = ""  # empty: the whole country
    rate: Decimal = Decimal(0)  # a fraction: 0.0725 is 7.25 %
    name: Name = ""
    code: Code = ""


class TaxRateListParams(Params):
    country: Code = ""


class TaxRate(msgspec.Struct):
    id: str
    country: str
    state: str
    rate: float
    name: str
    code: str
    jurisdiction: str
    createdAt: str


class TaxRateList(msgspec.Struct):
    taxRates: list[TaxRate]
    count: int


INVOICE_CREATE = Endpoint("billing.invoicing.invoice.create", InvoiceCreateParams, Invoice)
INVOICE_LIST = Endpoint("billing.invoicing.invoice.list", InvoiceListParams, InvoiceList)
INVOICE_GET = Endpoint("billing.invoicing.invoice.get", IdParams, Invoice)
INVOICE_FINALIZE = Endpoint("billing.invoicing.invoice.finalize", IdParams, Invoice)
INVOICE_VOID = Endpoint("billing.invoicing.invoice.void", IdParams, Invoice)
LINE_ITEM_ADD = Endpoint("billing.invoicing.invoice.line_item.add", LineItemAddParams, Invoice)
LINE_ITEM_REMOVE = Endpoint("billing.invoicing.invoice.line_item.remove", LineItemRemoveParams,
                            Invoice)
DISCOUNT_APPLY = Endpoint("billing.invoicing.invoice.discount.apply", DiscountParams, Invoice)
TAX_CALCULATE = Endpoint("billing.invoicing.invoice.tax.calculate", TaxParams, TaxResult)
INVOICE_PDF = Endpoint("billing.invoicing.invoice.pdf", IdParams, InvoiceDocument)
TAX_RATE_CREATE = Endpoint("billing.invoicing.tax_rate.create", TaxRateCreateParams, TaxRate)
TAX_RATE_LIST = Endpoint("billing.invoicing.tax_rate.list", TaxRateListParams, TaxRateList)


# ---- the upcoming invoice (its lines are invoice lines) and the pricing endpoints -------


class UpcomingInvoice(msgspec.Struct):
    userId: str
    lineItems: list[LineItem]  # usage lines, `li_usage_<meterId>`
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


# ---- collection (§2.5, §5.5, §9.5) ---------------------------------------------------------
# Pay takes the invoice id from the path and no body.


class Collection(msgspec.Struct, omit_defaults=True):
    """What one attempt took, per source (§2.5): `creditUsed + customerBalanceUsed +
    balanceUsed + providerUsed == amountCharged`."""

    success: bool
    creditUsed: int = 0
    customerBalanceUsed: int = 0
    balanceUsed: int = 0  # the wallet (the ledger balance)
    providerUsed: int = 0  # the default payment method, through payments
    amountCharged: int = 0
    providerRef: str = ""
    error: str = ""


class InvoicePaid(msgspec.Struct):
    invoice: Invoice
    collection: Collection


INVOICE_PAY = Endpoint("billing.invoicing.invoice.pay", IdParams, InvoicePaid)


# ---- customer balance (§2.7, §7) -----------------------------------------------------------

BALANCE_TRANSACTION_TYPES = ("adjustment", "bank_transfer", "invoice_payment", "credit_note",
                             "deposit", "refund")
BALANCE_TRANSACTIONS_PAGE = Page(50, 50)  # every field at its limit, a page fits a bus message


class CustomerBalanceQuery(Params):
    customerId: UserId = ""
    currency: Code = ""  # default usd, lower-cased


class BalanceAdjustmentParams(Params):
    customerId: UserId = ""
    amount: Int64 = 0  # positive credits the customer, negative debits; never 0
    currency: Code = ""
    description: Notes = ""


class BalanceTransactionListParams(Params):
    customerId: UserId = ""  # empty: every customer of the organization
    currency: Code = ""
    limit: int = 0  # ≤ 0: the default; capped (BALANCE_TRANSACTIONS_PAGE)
    offset: int = 0


class CustomerBalance(msgspec.Struct):
    customerId: str
    currency: str
    balance: int  # positive: credit the customer holds; may be negative


class BalanceTransaction(msgspec.Struct, omit_defaults=True):
    id: str
    customerId: str
    amount: int
    currency: str
    type: str
    endingBalance: int
    created: str
    description: str = ""
    invoiceId: str = ""
    creditNoteId: str = ""
    sourceRef: str = ""


CUSTOMER_BALANCE_GET = Endpoint("billing.invoicing.customer_balance.get", CustomerBalanceQuery,
                                CustomerBalance)
CUSTOMER_BALANCE_ADJUST = Endpoint("billing.invoicing.customer_balance.adjust",
                                   BalanceAdjustmentParams, BalanceTransaction)
BALANCE_TRANSACTION_LIST = Endpoint("billing.invoicing.balance_transaction.list",
                                    BalanceTransactionListParams, list[BalanceTransaction])


# ---- credit notes (§2.6, §6) ---------------------------------------------------------------

CREDIT_NOTE_LINES_MAX = 100
# What a note's lines may weigh as JSON, as stored and answered: a page of notes
# (CREDIT_NOTES_PAGE) with every other field at its limit still fits in one bus message.
CREDIT_NOTE_LINES_BYTES = 16 * 1024
CREDIT_NOTES_PAGE = Page(20, 20)


class CreditNoteLine(msgspec.Struct, omit_defaults=True):
    description: Notes = ""
    amount: Int64 = 0
    currency: Code = ""
    quantity: Int64 = 0
    unitPrice: Int64 = 0


class CreditNoteCreateParams(Params):
    invoiceId: Id = ""
    customerId: UserId = ""  # default: the invoice's customer
    amount: Int64 = 0  # ≤ 0: Σ lineItems.amount + outOfBandAmount
    reason: Code = ""
    lineItems: Annotated[list[CreditNoteLine],
                         msgspec.Meta(max_length=CREDIT_NOTE_LINES_MAX)] | None = None
    outOfBandAmount: Int64 = 0
    memo: Notes = ""


class CreditNoteListParams(Params):
    invoiceId: Id = ""
    customerId: UserId = ""
    limit: int = 0  # ≤ 0: the default; capped (CREDIT_NOTES_PAGE)
    offset: int = 0



class CreditNote(msgspec.Struct, omit_defaults=True):
    id: str
    invoiceId: str
    customerId: str
    number: str
    amount: int
    currency: str
    status: str
    created: str
    reason: str = ""
    lineItems: list[CreditNoteLine] | None = None
    outOfBandAmount: int = 0
    creditBalanceTransaction: str = ""
    memo: str = ""


CREDIT_NOTE_CREATE = Endpoint("billing.invoicing.credit_note.create", CreditNoteCreateParams,
                              CreditNote)
CREDIT_NOTE_LIST = Endpoint("billing.invoicing.credit_note.list", CreditNoteListParams,
                            list[CreditNote])
CREDIT_NOTE_GET = Endpoint("billing.invoicing.credit_note.get", IdParams, CreditNote)
CREDIT_NOTE_VOID = Endpoint("billing.invoicing.credit_note.void", IdParams,
                            CreditNote)


# ---- renewal (§8, §9.5, §9.8–§9.10; subscriptions.md §2.5) -----------------------------------
# Bus-only, asked by the subscriptions service: the period invoice of a subscription, built
# and collected once per (subscription, periodStart, periodEnd); a dunning retry of its
# remainder; giving it up. Periods are half-open: [periodStart, periodEnd).


class ProrationLine(msgspec.Struct, omit_defaults=True):
    """A pending proration of the subscription (subscriptions.md §2.3), billed as given."""

    id: Id = ""
    description: Notes = ""
    planId: Id = ""
    planName: Name = ""
    amount: Int64 = 0  # cents; negative for a downgrade's credit
    currency: Code = ""
    periodStart: Timestamp | None = None
    periodEnd: Timestamp | None = None


class PeriodItem(msgspec.Struct, omit_defaults=True):
    """A subscription item: `licensed` with a unitAmount bills unitAmount × quantity;
    `metered` names a meter whose usage in the period is priced by its rule."""

    meterId: Id = ""
    planId: Id = ""
    priceId: Id = ""
    quantity: Int64 = 0
    billingMode: Code = "licensed"  # licensed | metered
    unitAmount: Int64 = 0
    description: Notes = ""


class PeriodInvoiceParams(Params):
    subscriptionId: Id = ""
    userId: UserId = ""
    planId: Id = ""
    planName: Name = ""
    price: Int64 = 0  # cents per unit per period
    currency: Code = ""  # empty: usd
    quantity: Int64 = 1
    periodStart: Timestamp | None = None
    periodEnd: Timestamp | None = None
    defaultPaymentMethod: Id = ""
    prorations: Annotated[list[ProrationLine], msgspec.Meta(max_length=LINE_ITEMS_MAX)] = []
    items: Annotated[list[PeriodItem], msgspec.Meta(max_length=LINE_ITEMS_MAX)] = []
    collect: bool = True  # False: build and finalize only


class PeriodInvoice(msgspec.Struct):
    """`created` False: the period was invoiced before; `collection` is then synthesised from
    the invoice (success = paid, creditUsed = creditApplied, amountCharged = amountPaid) and
    nothing was collected. None when not collected (`collect` False)."""

    invoice: Invoice
    collection: Collection | None
    created: bool


PERIODS_MAX = 100  # period invoices asked in one request


class PeriodInvoicesParams(Params):
    periods: Annotated[list[PeriodInvoiceParams], msgspec.Meta(max_length=PERIODS_MAX)] = []


class PeriodRenewed(msgspec.Struct, omit_defaults=True):
    """One period's answer: its period invoice, or the refusal `INVOICE_RENEW_PERIOD` would
    have answered."""

    result: PeriodInvoice | None = None
    error: BusError | None = None


class PeriodInvoices(msgspec.Struct):
    renewed: list[PeriodRenewed]  # in the order asked


INVOICE_RENEW_PERIOD = Endpoint("billing.invoicing.invoice.renew_period", PeriodInvoiceParams,
                                PeriodInvoice)
# Many periods at once (a billing cycle's batch), each as INVOICE_RENEW_PERIOD answers it.
INVOICE_RENEW_PERIODS = Endpoint("billing.invoicing.invoice.renew_periods",
                                 PeriodInvoicesParams, PeriodInvoices)
# Re-collects an open invoice's remainder (amountDue − amountPaid), as the pay endpoint does.
INVOICE_RETRY = Endpoint("billing.invoicing.invoice.retry", IdParams, InvoicePaid)
# open → uncollectible (dunning gave up); any other status → 409.
INVOICE_MARK_UNCOLLECTIBLE = Endpoint("billing.invoicing.invoice.mark_uncollectible", IdParams,
                                      Invoice)
