"""Wire rules every service applies the same way, whoever calls it (the gateway for HTTP
clients, or another service on the bus): a currency code and a user id mean one thing
everywhere. Pure functions; a refusal is a `Failure` (400)."""

from __future__ import annotations

import re

from contracts.errors import invalid

DEFAULT_CURRENCY = "usd"
_CURRENCY = re.compile(r"^[a-z][a-z0-9]{2,9}$")


def currency_of(raw: str) -> str:
    """Trimmed and lower-cased; empty means `usd`; anything else must look like a code."""
    currency = raw.strip().lower() or DEFAULT_CURRENCY
    if not _CURRENCY.match(currency):
        raise invalid("invalid currency", "currency")
    return currency


def user_id(raw: str) -> str:
    """A user id as stored and compared: `owner/name`, trimmed and lower-cased. The gateway
    pins HTTP callers with it; services apply it again for bus callers."""
    user = raw.strip()
    # An id already canonical (every request the gateway forwards) is kept as is: the hot
    # paths pay a scan, not a copy.
    return user if user.islower() else user.lower()


def require_user(raw: str, message: str = "user is required", param: str = "user") -> str:
    """The canonical user id; 400 naming `param` when there is none."""
    user = user_id(raw)
    if not user:
        raise invalid(message, param)
    return user
