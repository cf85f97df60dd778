"""Ledger rules, free of I/O: validation, defaults, and the shape of each money movement."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from contracts import Actor
from contracts.ledger import DepositParams, RefundParams, UsageRecordParams, WithdrawParams
from services.runtime.errors import (
    Failure,
    conflict,
    forbidden,
    invalid,
    not_found,
    payment_required,
)

DEFAULT_CURRENCY = "usd"
_CURRENCY = re.compile(r"^[a-z][a-z0-9]{2,9}$")

# The platform's side of customer movements.
DEPOSITS = "platform:deposits"  # money that came in from outside (payments, manual credit)
USAGE_REVENUE = "platform:usage"  # what customers spent on metered usage

USAGE_TAG = "api-usage"


def user_account(user_id: str) -> str:
    return "user:" + user_id


def currency_of(raw: str) -> str:
    """Trimmed and lower-cased; empty means `usd`; anything else must look like a code."""
    currency = raw.strip().lower() or DEFAULT_CURRENCY
    if not _CURRENCY.match(currency):
        raise invalid("invalid currency", "currency")
    return currency


def require_user(user: str, message: str = "user is required") -> str:
    if not user:
        raise invalid(message, "user")
    return user


def available(balance: int, holds: int) -> int:
    return max(balance - holds, 0)


def require_mint(actor: Actor) -> None:
    """Creating money is for the platform and, by policy, secret keys: never end users."""
    if not actor.may_mint:
        raise forbidden()


@dataclass(frozen=True, slots=True)
class Movement:
    """One posting: `amount` leaves `debit` and arrives at `credit`."""

    type: str
    user_id: str
    debit: str
    credit: str
    currency: str
    amount: int
    notes: str = ""
    tags: str = ""
    metadata: dict[str, Any] | None = None
    expires_at: datetime | None = None
    reverses: str | None = None  # the transaction this one corrects

    @property
    def balance_delta(self) -> int:
        """How the customer's balance changes."""
        return self.amount if self.credit == user_account(self.user_id) else -self.amount


def deposit(p: DepositParams, now: datetime) -> Movement:
    user = require_user(p.user)
    if p.amount <= 0:
        raise invalid("amount must be positive", "amount")
    currency = currency_of(p.currency)
    return Movement(
        type="deposit", user_id=user, debit=DEPOSITS, credit=user_account(user),
        currency=currency, amount=p.amount,
        notes=p.notes or f"Deposit: {p.amount} cents {currency}",
        tags=p.tags, metadata=p.metadata or None,
        expires_at=now + timedelta(days=p.expiresIn) if p.expiresIn > 0 else None,
    )


def usage_debit(p: UsageRecordParams) -> Movement | None:
    """The debit for a usage record, or None when there is nothing to charge (amount ≤ 0).

    Never refused for lack of funds: the API call already happened, gating is the caller's
    job (the billing status / balance check), so the balance may go negative."""
    user = require_user(p.user)
    currency = currency_of(p.currency)
    if p.amount <= 0:
        return None
    return Movement(
        type="withdraw", user_id=user, debit=user_account(user), credit=USAGE_REVENUE,
        currency=currency, amount=p.amount,
        notes=f"API usage: {p.model} ({p.totalTokens} tokens)", tags=USAGE_TAG,
        metadata={
            "model": p.model, "provider": p.provider, "promptTokens": p.promptTokens,
            "completionTokens": p.completionTokens, "totalTokens": p.totalTokens,
            "requestId": p.requestId, "premium": p.premium, "stream": p.stream,
            "status": p.status, "clientIp": p.clientIp,
        },
    )


# ---- withdrawals, refunds, starter credit ----------------------------------------------

WITHDRAWALS = "platform:withdrawals"  # money paid out to or taken by customers
EXPIRED = "platform:expired"  # unspent expiring money that lapsed
STARTER_CREDIT_TAG = "starter-credit"
STARTER_CREDIT_CENTS = 500
STARTER_CREDIT_DAYS = 30
REFUND_TAG = "refund"
EXPIRY_TAG = "expiry"


def withdrawal(p: WithdrawParams) -> Movement:
    user = require_user(p.user)
    if p.amount <= 0:
        raise invalid("amount must be positive", "amount")
    currency = currency_of(p.currency)
    return Movement(type="withdraw", user_id=user, debit=user_account(user),
                    credit=WITHDRAWALS, currency=currency, amount=p.amount,
                    notes=p.notes or f"Withdraw: {p.amount} cents {currency}", tags=p.tags)


def insufficient_balance(have: int, need: int) -> Failure:
    return payment_required(f"insufficient balance: have {have} cents, need {need} cents")


def refund_request(p: RefundParams) -> tuple[str, int, str]:
    """Validated (user, amount, originalTransactionId), in the reference's order."""
    user = require_user(p.user)
    if p.amount <= 0:
        raise invalid("amount must be positive", "amount")
    if not p.originalTransactionId:
        raise invalid("originalTransactionId is required", "originalTransactionId")
    return user, p.amount, p.originalTransactionId


@dataclass(frozen=True, slots=True)
class Refundable:
    """The usage debit a refund points at, and what was refunded of it so far."""

    user_id: str
    currency: str
    amount: int
    tags: str
    refunded: int


def refund(p: RefundParams, original: Refundable | None) -> Movement:
    """A refund gives back (part of) a usage debit of the same user: never more than it,
    in total, and never in another currency (a refund that mints money is refused)."""
    user, amount, original_id = refund_request(p)
    if original is None or original.user_id != user or original.tags != USAGE_TAG:
        raise not_found("original transaction not found")
    currency = currency_of(p.currency) if p.currency.strip() else original.currency
    if currency != original.currency:
        raise invalid("currency does not match the original transaction", "currency")
    refundable = original.amount - original.refunded
    if amount > refundable:
        raise conflict(f"refund exceeds the original transaction: {refundable} cents "
                       "left to refund")
    return Movement(
        type="deposit", user_id=user, debit=USAGE_REVENUE, credit=user_account(user),
        currency=currency, amount=amount, tags=REFUND_TAG,
        notes=p.notes or (f"Refund: {amount} cents {currency} "
                          f"(original tx: {original_id})"),
        metadata={"refundType": "billing-correction", "originalTransactionId": original_id},
        reverses=original_id,
    )


def starter_credit(user: str, now: datetime) -> Movement:
    user = require_user(user)
    return Movement(
        type="deposit", user_id=user, debit=CREDITS_ISSUED, credit=user_account(user),
        currency=DEFAULT_CURRENCY, amount=STARTER_CREDIT_CENTS, tags=STARTER_CREDIT_TAG,
        notes="Welcome credit: $5.00 USD (expires in 30 days)",
        metadata={"creditType": "starter", "expiryDays": STARTER_CREDIT_DAYS},
        expires_at=now + timedelta(days=STARTER_CREDIT_DAYS),
    )


CREDITS_ISSUED = "platform:credits"  # money the platform gives away (starter credit, promos)


def lapse(user_id: str, currency: str, lot_id: str, unspent: int) -> Movement:
    return Movement(type="withdraw", user_id=user_id, debit=user_account(user_id),
                    credit=EXPIRED, currency=currency, amount=unspent, tags=EXPIRY_TAG,
                    notes=f"Expired: {unspent} unspent cents of deposit {lot_id}",
                    reverses=lot_id)


def lot_remaining(amount: int, balance_after: int) -> int:
    """How much of a new expiring deposit stays spendable: what paid off a negative balance
    was spent at once and cannot lapse."""
    return min(amount, max(balance_after, 0))


def today(now: datetime) -> datetime:
    """Start of the current UTC day: daily allowances reset at 00:00 UTC."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0)
