"""Ledger rules, free of I/O: validation, defaults, and the shape of each money movement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec

from contracts import Actor
from contracts.errors import (
    Failure,
    conflict,
    forbidden,
    invalid,
    not_found,
    payment_required,
)
from contracts.ledger import (
    DepositParams,
    RefundParams,
    TopupCreditParams,
    TopupReversalParams,
    UsageRecordParams,
    WithdrawParams,
)
from contracts.rules import DEFAULT_CURRENCY, currency_of, require_user

# The platform's side of customer movements.
DEPOSITS = "platform:deposits"  # money that came in from outside (payments, manual credit)
USAGE_REVENUE = "platform:usage"  # what customers spent on metered usage

USAGE_TAG = "api-usage"


def user_account(user_id: str) -> str:
    return "user:" + user_id


def available(balance: int, holds: int) -> int:
    return max(balance - holds, 0)


def require_platform(actor: Actor) -> None:
    """Platform services only (payments crediting what a customer paid)."""
    if actor.role != "platform" or not actor.may_mint:
        raise forbidden()


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


def _moved(user: str, amount: int, currency: str) -> tuple[str, str]:
    """Whose money moves and in which currency, checked in the reference's order."""
    user = require_user(user)
    if amount <= 0:
        raise invalid("amount must be positive", "amount")
    return user, currency_of(currency)


def deposit(p: DepositParams, now: datetime) -> Movement:
    user, currency = _moved(p.user, p.amount, p.currency)
    return Movement(
        type="deposit", user_id=user, debit=DEPOSITS, credit=user_account(user),
        currency=currency, amount=p.amount,
        notes=p.notes or f"Deposit: {p.amount} cents {currency}",
        tags=client_tags(p.tags), metadata=p.metadata or None,
        expires_at=_expiry(now, p.expiresIn),
    )


def topup_credit(p: TopupCreditParams) -> Movement:
    """What a customer paid through a provider, onto their balance (payments.md §2.10)."""
    if not p.topupId.strip():
        raise invalid("topupId is required", "topupId")
    user, currency = _moved(p.user, p.amount, p.currency)
    return Movement(
        type="deposit", user_id=user, debit=DEPOSITS, credit=user_account(user),
        currency=currency, amount=p.amount,
        notes=f"Top-up via {p.provider} (ref: {p.providerRef})", tags=TOPUP_TAG,
        metadata={"sourceKind": f"{p.provider}-payment", "sourceId": p.providerRef,
                  "topupId": p.topupId.strip(), "paymentIntentId": p.paymentIntentId})


def topup_reversal(p: TopupReversalParams) -> Movement:
    """A refunded top-up's credit leaving the balance, or coming back (`restore`) when the
    provider refused the refund."""
    refund = p.refundId.strip()
    if not refund:
        raise invalid("refundId is required", "refundId")
    user, currency = _moved(p.user, p.amount, p.currency)
    if p.restore:
        return Movement(type="deposit", user_id=user, debit=DEPOSITS, credit=user_account(user),
                        currency=currency, amount=p.amount, tags=TOPUP_REFUND_TAG,
                        notes=f"Top-up refund {refund} refused by the provider: credit restored",
                        metadata={"refundId": refund})
    return Movement(type="withdraw", user_id=user, debit=user_account(user), credit=DEPOSITS,
                    currency=currency, amount=p.amount, tags=TOPUP_REFUND_TAG,
                    notes=f"Top-up refunded (refund {refund})", metadata={"refundId": refund})


def _expiry(now: datetime, days: int) -> datetime | None:
    """`now` plus `days` (≤ 0: never expires); a date past year 9999 is refused, not a 500."""
    if days <= 0:
        return None
    try:
        return now + timedelta(days=days)
    except OverflowError:
        raise invalid("expiresIn is too large", "expiresIn") from None


def client_tags(tags: str) -> str:
    """A client's `tags`, refused when it is one the ledger gives meaning to: `expiry` skips
    lot consumption, `starter-credit` is the one-per-user grant, `api-usage` makes a debit
    refundable, `refund` counts against a usage debit. Tags are one string compared by
    equality; refused regardless of case and surrounding spaces, so no look-alike either."""
    if tags.strip().lower() in SYSTEM_TAGS:
        raise invalid(f"tags {tags.strip()!r} is reserved for the ledger", "tags")
    return tags


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
TOPUP_TAG = "topup"
TOPUP_REFUND_TAG = "topup-refund"
# Tags the ledger writes itself and acts on (a top-up's says a provider was paid); never
# accepted from a client.
SYSTEM_TAGS = frozenset({USAGE_TAG, STARTER_CREDIT_TAG, REFUND_TAG, EXPIRY_TAG, TOPUP_TAG,
                         TOPUP_REFUND_TAG})


def withdrawal(p: WithdrawParams) -> Movement:
    user, currency = _moved(p.user, p.amount, p.currency)
    return Movement(type="withdraw", user_id=user, debit=user_account(user),
                    credit=WITHDRAWALS, currency=currency, amount=p.amount,
                    notes=p.notes or f"Withdraw: {p.amount} cents {currency}",
                    tags=client_tags(p.tags))


def withdrawal_of_available(p: WithdrawParams, have: int) -> Movement:
    """The withdrawal `p` asks for, of no more than the `have` cents available; nothing
    available is refused (402), as a withdrawal of more than is available is."""
    if have <= 0:
        raise insufficient_balance(max(have, 0), p.amount)
    return withdrawal(msgspec.structs.replace(p, amount=min(p.amount, have)))


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


# ---- verification: lots replayed from the entries --------------------------------------


@dataclass(frozen=True, slots=True)
class LotEntry:
    """One entry of a customer account, as the lot replay reads it."""

    id: str
    at: datetime  # when its transaction began: the `now()` the ledger decided with
    delta: int  # how the customer's balance changed
    lapses: str | None = None  # an expiry: the lot it closed
    lot_expires_at: datetime | None = None  # a deposit that opened a lot: when it expires
    lot_remaining: int = 0  # ... and what the lot holds now (stored)


@dataclass(frozen=True, slots=True)
class LotExcess:
    lot_id: str
    unspent: int  # stored: what the lot holds now plus what lapsed of it
    expected: int  # replayed: what it should have left unspent at most


def lot_excess(entries: list[LotEntry]) -> list[LotExcess]:
    """The lots of one account whose unspent money (remaining + lapsed) exceeds what the
    entries say it should be, replaying them in order (`entries` sorted by time, a lapse
    before the other entries of its instant). The ledger's rules, replayed:
    - a new lot keeps what is left of the deposit once the balance, without the lots already
      expired, is out of debt (`lot_remaining`): a lot still open past its expiry counts as
      lapsed, as the ledger lapses such lots before opening one;
    - a debit other than a lapse consumes the lots not expired at its time, soonest-expiring
      first (the ledger's `_CONSUME_LOTS`);
    - a lapse closes its lot: nothing is consumed from it afterwards.
    The replay orders transactions by when they began; the ledger applies one account's in
    the order they lock its balance row, their first step, so the two orders agree unless
    two transactions of one account overlap."""
    balance = 0
    open_lots: dict[str, datetime] = {}  # lot id -> when it expires, until it lapses
    expected: dict[str, int] = {}  # lot id -> replayed unspent: what an open lot has left
    unspent: dict[str, int] = {}
    for e in entries:
        balance += e.delta
        if e.lapses is not None:
            open_lots.pop(e.lapses, None)
            if e.lapses in unspent:
                unspent[e.lapses] += -e.delta
        elif e.lot_expires_at is not None and e.delta > 0:
            due = sum(expected[lot_id] for lot_id, expires_at in open_lots.items()
                      if expires_at <= e.at)
            open_lots[e.id] = e.lot_expires_at
            expected[e.id] = lot_remaining(e.delta, balance - due)
            unspent[e.id] = e.lot_remaining
        elif e.delta < 0:
            _consume(open_lots, expected, e.at, -e.delta)
    return [LotExcess(lot_id, unspent[lot_id], expected[lot_id])
            for lot_id in expected if unspent[lot_id] > expected[lot_id]]


def _consume(open_lots: dict[str, datetime], expected: dict[str, int], at: datetime,
             amount: int) -> None:
    for lot_id, expires_at in sorted(open_lots.items(), key=lambda lot: (lot[1], lot[0])):
        if amount <= 0:
            return
        if expires_at <= at or expected[lot_id] == 0:
            continue
        took = min(expected[lot_id], amount)
        expected[lot_id] -= took
        amount -= took
