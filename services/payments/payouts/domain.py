"""Payouts, pure: what a request asks, the payout state machine (payments.md §2.6) and how
much cash a payout may take. No I/O; a refusal is a `Failure`.

A payout pays out of the platform's cash: the journal's `platform:cash` account, available
balance (posted less held), in the payout's currency. Payouts whose journal entry has not
reached the ledger yet are taken off that figure too, so that no two payouts spend the same
money."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts.errors import invalid, payment_required
from contracts.payouts import PayoutCreateParams
from services.payments.common import currency

PENDING, IN_TRANSIT, PAID, FAILED, CANCELED = (
    "pending", "in_transit", "paid", "failed", "canceled")
STATUSES = (PENDING, IN_TRANSIT, PAID, FAILED, CANCELED)
DESTINATION_TYPES = ("bank_account", "card")
SETTLED_BY_BANK = (IN_TRANSIT, PAID, FAILED)  # what an operator or a provider reports

PAYOUT_NOT_FOUND = "payout not found"
CASH = "platform:cash"  # the journal's account the platform's money is in


@dataclass(frozen=True, slots=True)
class Payout:
    """What the state machine reads and changes; the store's columns by the same names."""

    status: str
    arrival_date: datetime | None = None
    provider_ref: str = ""
    failure_code: str = ""
    failure_message: str = ""


@dataclass(frozen=True, slots=True)
class NewPayout:
    amount: int
    currency: str
    destination_type: str
    destination_id: str
    description: str
    metadata: dict[str, Any] | None


def new_payout(p: PayoutCreateParams) -> NewPayout:
    """§4.6, in the reference's order, then the checks the reference lacked."""
    if p.amount <= 0:
        raise invalid("amount must be positive", "amount")
    destination = p.destinationId.strip()
    if not destination:
        raise invalid("destinationId is required", "destinationId")
    kind = p.destinationType.strip()
    if kind not in DESTINATION_TYPES:
        raise invalid("destinationType must be bank_account or card", "destinationType")
    return NewPayout(p.amount, currency(p.currency), kind, destination, p.description,
                     p.metadata)


def require_funds(available: int, on_their_way: int, amount: int) -> None:
    """`available`: the journal's cash; `on_their_way`: payouts not posted to it yet."""
    have = max(available - on_their_way, 0)
    if amount > have:
        raise payment_required(f"insufficient balance: have {have} cents, need {amount} cents")


# ---- the model's transitions (§2.6) --------------------------------------------------------


def mark_in_transit(p: Payout) -> Payout:
    if p.status != PENDING:
        raise invalid(f"can only transit pending payouts, current: {p.status}")
    return dataclasses.replace(p, status=IN_TRANSIT)


def mark_paid(p: Payout, at: datetime) -> Payout:
    if p.status not in (PENDING, IN_TRANSIT):
        raise invalid(f"can only pay pending/in-transit payouts, current: {p.status}")
    return dataclasses.replace(p, status=PAID, arrival_date=at)


def mark_failed(p: Payout, code: str, message: str) -> Payout:
    """From any status (a paid payout the bank returns fails too); both fields overwritten."""
    return dataclasses.replace(p, status=FAILED, failure_code=code, failure_message=message)


def cancel(p: Payout) -> Payout:
    if p.status != PENDING:
        raise invalid(f"can only cancel pending payouts, current: {p.status}")
    return dataclasses.replace(p, status=CANCELED)


def settled(p: Payout, status: str, at: datetime, provider_ref: str = "", code: str = "",
            message: str = "") -> Payout:
    """What the bank (or a provider) reports of a payout, applied by the model's rules."""
    if status == IN_TRANSIT:
        after = mark_in_transit(p)
    elif status == PAID:
        after = mark_paid(p, at)
    elif status == FAILED:
        after = mark_failed(p, code, message)
    else:
        raise invalid("status must be one of in_transit, paid, failed", "status")
    return dataclasses.replace(after, provider_ref=provider_ref or p.provider_ref)


def reversed_by(before: str, after: str) -> bool:
    """Money that did not leave comes back to cash: a payout canceled, or failed (once: a
    failed payout failing again, or a canceled one failing, is not reversed twice)."""
    return after in (CANCELED, FAILED) and before not in (CANCELED, FAILED)


def event_type(status: str) -> str:
    """§7: payout.created | canceled | paid | failed; in transit is an update."""
    return "payout." + {PENDING: "created", IN_TRANSIT: "updated"}.get(status, status)
