"""Refunds, pure: what a request asks, how much may be refunded (payments.md §8.1 DO) and
what a provider's answer makes of a refund (§2.4). No I/O; a refusal is a `Failure`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from contracts.errors import invalid
from contracts.payments import RefundCreateParams
from services.payments.intents.domain import SUCCEEDED
from services.payments.providers.base import RefundResult

PENDING = "pending"
FAILED = "failed"
REASONS = ("duplicate", "fraudulent", "requested_by_customer")

REFUND_NOT_FOUND = "refund not found"
INVOICE_NOT_FOUND = "invoice not found"
TARGET_REQUIRED = "either paymentIntentId or invoiceId is required"
PROVIDER_FAILED = "the payment provider failed the refund"  # a `failed` answer has no text


@dataclass(frozen=True, slots=True)
class Asked:
    """A refund request, checked before anything is read."""

    payment_intent_id: str  # empty: the intent that paid `invoice_id` (invoicing knows it)
    invoice_id: str
    amount: int  # as requested: ≤ 0 means what is left
    reason: str


@dataclass(frozen=True, slots=True)
class Refund:
    """What the provider's answer changes; the store's columns by the same names."""

    status: str
    amount: int
    currency: str
    reason: str = ""
    provider_ref: str = ""
    failure_reason: str = ""


def asked(p: RefundCreateParams) -> Asked:
    pi, invoice = p.paymentIntentId.strip(), p.invoiceId.strip()
    if not pi and not invoice:
        raise invalid(TARGET_REQUIRED, "paymentIntentId")
    reason = p.reason.strip()
    if reason and reason not in REASONS:
        raise invalid(f"reason must be one of {', '.join(REASONS)}", "reason")
    return Asked(pi, invoice, p.amount, reason)


def refundable(status: str) -> None:
    if status != SUCCEEDED:
        raise invalid(f"can only refund succeeded payment intents, current: {status}")


def refund_amount(requested: int, received: int, reserved: int) -> int:
    """§8.1 DO: `reserved` is what succeeded and pending refunds already took; "everything"
    (≤ 0) means what is left."""
    remaining = received - reserved
    if remaining <= 0:
        raise invalid("payment intent already fully refunded")
    amount = requested if requested > 0 else remaining
    if amount > remaining:
        raise invalid(f"refund amount {amount} exceeds refundable amount {remaining}", "amount")
    return amount


# The model's transitions (§2.4): permissive, as provider webhooks may replay them in any
# order. The API moves a refund only from `pending`.


def mark_succeeded(r: Refund, provider_ref: str = "") -> Refund:
    return dataclasses.replace(r, status=SUCCEEDED, provider_ref=provider_ref or r.provider_ref)


def mark_failed(r: Refund, reason: str) -> Refund:
    return dataclasses.replace(r, status=FAILED, failure_reason=reason)


def answered(r: Refund, result: RefundResult) -> Refund:
    """The provider's answer to the refund: done, still settling (`pending`, its webhook
    settles it), or failed."""
    if result.status == SUCCEEDED:
        return mark_succeeded(r, result.refund_id)
    if result.status == PENDING:
        return dataclasses.replace(r, provider_ref=result.refund_id)
    return mark_failed(dataclasses.replace(r, provider_ref=result.refund_id), PROVIDER_FAILED)
