"""Ledger rules, free of I/O: validation, defaults, and the shape of each money movement."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from contracts import Actor
from contracts.ledger import DepositParams, UsageRecordParams
from services.runtime.errors import forbidden, invalid

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


MAX_PAGE = 1000


def page(limit: int, offset: int, default_limit: int) -> tuple[int, int]:
    """The reference's lenient paging: a limit ≤ 0 means the default, a negative offset 0;
    limits are capped so no list is unbounded."""
    limit = default_limit if limit <= 0 else min(limit, MAX_PAGE)
    return limit, max(offset, 0)
