"""Payment methods, pure: what a new method is, its card's checks, metadata merges, and the
checks of a raw card sent for tokenization (payments.md §2.3, §4.1, §4.9). No I/O; a refusal
is a `Failure`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts.errors import invalid
from contracts.payments import Card, CardTokenizeParams, PaymentMethodCreateParams
from contracts.rules import require_user

METHOD_NOT_FOUND = "payment method not found"
TOKENIZATION_UNAVAILABLE = ("server-side card tokenization not available; "
                            "use Square Web Payments SDK")
METHOD_TYPES = frozenset({"card", "bank_account", "balance"})
# Keys only a provider sets: a client's PATCH leaves them alone.
PROVIDER_KEYS = frozenset({"squareCustomerId", "squareCardId", "stripeCustomerId", "verified",
                           "squareVerified"})


@dataclass(frozen=True, slots=True)
class NewMethod:
    customer_id: str
    type: str
    name: str
    card: Card | None
    bank_account: Any
    billing_address: Any
    provider_type: str
    metadata: dict[str, Any]


def new_method(p: PaymentMethodCreateParams) -> NewMethod:
    customer = require_user(p.customerId, "customerId is required", "customerId")
    kind = p.type.strip() or "card"
    if kind not in METHOD_TYPES:
        raise invalid("type must be card, bank_account or balance", "type")
    if p.card is not None:
        _check_card(p.card)
    name = card_name(p.card) if p.card is not None else ""
    metadata = {k: v for k, v in (p.metadata or {}).items() if k not in PROVIDER_KEYS}
    return NewMethod(customer, kind, name, p.card, p.bankAccount, p.billingAddress,
                     p.providerType.strip(), metadata)


def card_name(card: Card) -> str:
    return f"{card.brand} ending in {card.last4}"  # even with no brand (the reference's)


def _check_card(card: Card) -> None:
    if card.last4 and not (len(card.last4) == 4 and card.last4.isdigit()):
        raise invalid("card.last4 must be 4 digits", "card.last4")
    if not 0 <= card.expMonth <= 12:
        raise invalid("card.expMonth must be between 1 and 12", "card.expMonth")
    if not 0 <= card.expYear <= 9999:
        raise invalid("card.expYear is invalid", "card.expYear")


def merged_metadata(old: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """Shallow merge; a key set to null is removed; provider keys are read-only (§4.1)."""
    if patch is None:
        return old
    merged = dict(old)
    for k, v in patch.items():
        if k in PROVIDER_KEYS:
            continue
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    return merged


def check_card(p: CardTokenizeParams) -> None:
    """§4.9's checks, in its order. The number's length is counted in bytes without its
    spaces, as the reference counts it (no Luhn check: any characters)."""
    if not 13 <= len(p.number.replace(" ", "").encode()) <= 19:
        raise invalid("invalid card number", "number")
    if not p.expiry_month or not p.expiry_year:
        raise invalid("expiry_month and expiry_year are required", "expiry_month")
    if not p.cvc:
        raise invalid("cvc is required", "cvc")
