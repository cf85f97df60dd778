"""Invoicing messages other services already ask for (metering-invoicing.md). The invoicing
service is not built yet: it will serve these when it is, and until then nobody answers
(callers say what silence means)."""

from __future__ import annotations

import msgspec

from contracts.common import Params
from contracts.endpoint import Endpoint
from contracts.limits import Id


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
