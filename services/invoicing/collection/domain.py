"""Collecting an invoice, pure (metering-invoicing.md §2.5, §5.5, §9.5): the waterfall's
arithmetic, the keys its legs carry, what a finished attempt changes on the invoice. No I/O.

An attempt collects what the invoice still has due (`amountDue − amountPaid`) from credit
grants, the customer balance, the wallet and the default payment method, in that order, each
only while something is left. Every leg's outcome is recorded on the attempt as it comes, and
every leg carries a key of the invoice, the attempt and the leg: an attempt resumed after a
crash or a timeout asks each source again with the same key and the same amount, so no
source gives twice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from contracts.errors import Failure, conflict
from contracts.invoicing import Collection
from services.invoicing.invoices.domain import OPEN, PAID, refused

# How long a running attempt keeps others out; past it, a collector is presumed dead and a
# pay resumes its attempt.
LEASE = timedelta(seconds=30)
LEGS = ("credit_used", "balance_used", "wallet_used", "card_used")


# A payment intent's statuses, as collection reads them.
CHARGED = "succeeded"
NOT_CHARGED = frozenset({"requires_payment_method", "canceled"})
TO_CONFIRM = "requires_confirmation"
NEEDS_CUSTOMER = "requires_action"  # canceled: no customer is there to authenticate it


def moved_nothing(refused: Failure) -> bool:
    """Whether a source's refusal is final and took nothing: bad input, forbidden, not
    found, declined or insufficient (402). Anything else — no answer, a server error, a
    key in use or reused with other parameters — says nothing of what moved: the attempt
    stays open and is resumed."""
    return not refused.error.retryable and refused.error.status in (400, 402, 403, 404)


def in_progress() -> Exception:
    return conflict("invoice payment already in progress")


def collectable(status: str) -> None:
    if status != OPEN:
        raise refused(f"invoice must be open to collect, current status: {status}")


def key(invoice_id: str, attempt: int, leg: str) -> str:
    """The idempotency key of one leg (§5.5: from the invoice, the attempt and the leg)."""
    return f"invoice:{invoice_id}:a{attempt}:{leg}"


@dataclass(frozen=True, slots=True)
class Attempt:
    invoice_id: str
    number: int
    due: int  # what was left to collect when it started
    credit_used: int | None = None  # None: that leg not done yet
    credit_by_meter: dict[str, int] | None = None  # of credit_used, per meter's usage lines
    balance_used: int | None = None
    wallet_planned: int | None = None
    wallet_used: int | None = None
    card_used: int | None = None
    card_ref: str = ""
    payment_intent_id: str = ""
    error: str = ""

    @property
    def charged(self) -> int:
        return sum(getattr(self, leg) or 0 for leg in LEGS)

    @property
    def left(self) -> int:
        return self.due - self.charged

    def key(self, leg: str) -> str:
        return key(self.invoice_id, self.number, leg)


def meter_caps(lines: list[dict[str, Any]], credited: dict[str, int]) -> dict[str, int]:
    """What grants may still pay of each meter's usage lines (§9.4 Δ: a meter's grants pay
    its lines only, never more than them): the lines' amount less what earlier attempts'
    credit paid of them. In the order the meters first appear."""
    totals: dict[str, int] = {}
    for line in lines:
        meter, amount = line.get("meterId") or "", line.get("amount", 0)
        if meter and amount > 0:
            totals[meter] = totals.get(meter, 0) + amount
    return {m: max(0, total - credited.get(m, 0)) for m, total in totals.items()}


def result(a: Attempt) -> Collection:
    left = a.left
    error = "" if left == 0 else (
        a.error or f"insufficient funds: {left} cents remaining after credits and balance")
    return Collection(success=left == 0, creditUsed=a.credit_used or 0,
                      customerBalanceUsed=a.balance_used or 0, balanceUsed=a.wallet_used or 0,
                      providerUsed=a.card_used or 0, amountCharged=a.charged,
                      providerRef=a.card_ref, error=error)


def finished(a: Attempt, amount_due: int, amount_paid: int, credit_applied: int, at: Any,
             ) -> dict[str, Any]:
    """The invoice's changes when attempt `a` ends (§9.5, ours): what it took adds to what
    earlier attempts took; the invoice is paid once nothing is left."""
    paid = amount_paid + a.charged
    credit = credit_applied + (a.credit_used or 0)
    changes: dict[str, Any] = dict(amount_paid=paid, credit_applied=credit,
                                   attempt_count=a.number, last_attempt_at=at)
    if paid >= amount_due:
        # A card pays the whole remainder, so only the last attempt can have used one.
        method = "card" if a.card_used else "credit" if credit == paid > 0 else "balance"
        changes.update(status=PAID, paid_at=at, amount_paid=amount_due, payment_method=method,
                       payment_ref=a.card_ref, payment_intent_id=a.payment_intent_id)
    return changes
