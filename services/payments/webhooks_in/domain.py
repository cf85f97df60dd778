"""Inbound provider webhooks, pure (payments.md §5): which provider a URL names, whose secret
verifies a delivery, and what a verified event asks of us — read from the provider's object
into our terms, so the handlers only find and change our objects. No I/O.

A delivery is trusted only through its signature (§5.3 DO: the URL's provider only; the
organization's secrets of each mode, else the platform's from the environment). The secret
that verifies decides the mode: a test-mode secret never changes live objects. A delivery
whose URL names no organization is verified with the secrets of the organization whose
settings name the event's provider account (§5.5 (2)), else with the platform's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import msgspec

from contracts import ErrorCode
from contracts.errors import Failure, invalid, not_found
from contracts.webhooks_in import SIGNATURE_HEADERS
from services.payments.providers import square, stripe
from services.payments.providers.base import ProviderError, WebhookEvent

PROVIDERS = ("stripe", "square")
MISSING_SIGNATURE = "missing webhook signature header"
INVALID_SIGNATURE = "invalid webhook signature"

# What became of a stored event.
RECEIVED, PROCESSED, IGNORED, FAILED = "received", "processed", "ignored", "failed"


def provider_of(raw: str) -> str:
    """§5.3 DO: the URL names stripe or square; anything else is 404 `unknown provider`."""
    name = raw.strip().lower()
    if name not in PROVIDERS:
        raise not_found("unknown provider")
    return name


_SIGNATURE_HEADERS = frozenset(h.lower() for h in SIGNATURE_HEADERS)


def require_signature(headers: Mapping[str, str]) -> None:
    """§5.2: at least one of the signature headers; which one is the provider's business."""
    if not any(value and name.lower() in _SIGNATURE_HEADERS for name, value in headers.items()):
        raise invalid(MISSING_SIGNATURE)


def unauthenticated() -> Failure:
    return Failure(ErrorCode.UNAUTHENTICATED, 401, INVALID_SIGNATURE)


class _StripeAccount(msgspec.Struct):
    account: str = ""  # on Connect events: the connected account's


class _SquareMerchant(msgspec.Struct):
    merchant_id: str = ""


def account_in(provider: str, body: bytes) -> str:
    """The provider account an unverified body claims to come from ("" when none): it only
    chooses whose secrets verify it, so a body that is not an event names none."""
    try:
        if provider == "stripe":
            return msgspec.json.decode(body, type=_StripeAccount).account
        return msgspec.json.decode(body, type=_SquareMerchant).merchant_id
    except msgspec.DecodeError:
        return ""


@dataclass(frozen=True, slots=True)
class Secret:
    livemode: bool
    value: str


def verify(provider: str, body: bytes, headers: Mapping[str, str], url: str,
           secrets: Iterable[Secret], now: float) -> tuple[bool, WebhookEvent]:
    """(mode, event) of the first secret that verifies the delivery; 401 when none does
    (bad, missing or stale signature, no secret at all, or a body that is not an event).
    A secret serving both modes (the platform's, without a key to tell) is checked once."""
    checked: dict[str, WebhookEvent | None] = {}  # by secret: the event it verified
    for secret in secrets:
        if secret.value not in checked:
            checked[secret.value] = _verified_by(provider, body, headers, url, secret.value,
                                                 now)
        event = checked[secret.value]
        if event is None:
            continue
        if provider == "stripe" and event.livemode not in (None, secret.livemode):
            continue  # signed with a secret of the other mode: not this one's event
        return secret.livemode, event
    raise unauthenticated()


def _verified_by(provider: str, body: bytes, headers: Mapping[str, str], url: str,
                 secret: str, now: float) -> WebhookEvent | None:
    try:
        if provider == "stripe":
            return stripe.verify_webhook(body, headers, secret, now)
        return square.verify_webhook(body, headers, secret, url)
    except ProviderError:
        return None


# ---- what an event asks -----------------------------------------------------------------

# Effects, by the area they change. `forward`: subscriptions and invoices at the provider
# concern other services: published as `provider.<type>` for them (they never read a
# provider's payload themselves); `payout`: one of our payouts, as the bank reports it.
PAYMENT, REFUND, METHOD, DISPUTE, FORWARD, PAYOUT = (
    "payment", "refund", "method", "dispute", "forward", "payout")

_PAYMENT_TYPES = frozenset({"payment.completed", "payment.failed", "payment.updated",
                            "payment.created", "payment_intent.canceled"})
_REFUND_TYPES = frozenset({"refund.succeeded", "refund.updated", "refund.created",
                           "refund.failed", "charge.refund.updated"})
_METHOD_TYPES = frozenset({"payment_method.detached", "payment_method.updated",
                           "payment_method.automatically_updated", "card.disabled",
                           "card.updated", "card.automatically_updated"})
_DISPUTE_TYPES = frozenset({"dispute.created", "dispute.updated", "dispute.resolved",
                            "charge.dispute.updated", "charge.dispute.funds_withdrawn",
                            "charge.dispute.funds_reinstated"})


def effect_of(event: WebhookEvent) -> str | None:
    """The area an event changes; None: recorded only."""
    t = event.type
    if t in _PAYMENT_TYPES:
        return PAYMENT
    if t in _REFUND_TYPES:
        return REFUND
    if t in _METHOD_TYPES:
        return METHOD
    if t in _DISPUTE_TYPES:
        return DISPUTE
    if t.startswith(("subscription.", "invoice.", "customer.subscription.")):
        return FORWARD
    if t.startswith("payout."):
        return PAYOUT
    return None


def changes_nothing(event: WebhookEvent, effect: str | None) -> str:
    """Why the event's effect would change nothing whatever we hold, read from the event
    alone ("" when only our records can tell): such an event is final when stored, with no
    transaction of its own. The effects say the same when they read it (the redrive)."""
    if effect == PAYMENT:
        news = payment_news(event)
        return "" if news is not None and news.outcome else (
            f"no final payment status in {event.type}")
    if effect == REFUND:
        return "" if refund_news(event) else f"no pending refund for {event.type}"
    if effect == METHOD:
        return "" if method_news(event) is not None else f"no payment method for {event.type}"
    if effect == DISPUTE:
        return "" if dispute_news(event) is not None else f"no dispute to read in {event.type}"
    if effect == PAYOUT:
        return "" if payout_news(event) is not None else f"no payout of ours in {event.type}"
    return ""


def forwarded_type(event: WebhookEvent) -> str:
    """`provider.<normalized type>` (an event type: lower-case tokens)."""
    return _forwarded_type(event.type)


@lru_cache(maxsize=1024)  # a provider's few dozen types, each made once, not per delivery
def _forwarded_type(event_type: str) -> str:
    tokens = "".join(c if c.isalnum() or c == "." else "_" for c in event_type.lower())
    return "provider." + ".".join(t for t in tokens.split(".") if t)


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _int(obj: Mapping[str, Any] | None, key: str) -> int:
    value = (obj or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True, slots=True)
class PaymentNews:
    """The provider's word on one of its payments (our intent's `provider_ref`)."""

    ref: str
    outcome: str  # succeeded | failed | "" (nothing final yet)
    amount: int  # received (succeeded), in minor units; 0: not said
    error: str = ""


def payment_news(event: WebhookEvent) -> PaymentNews | None:
    obj = event.data
    ref = _str(obj, "id")
    if not ref:
        return None
    if event.provider == "stripe":
        status = _str(obj, "status")
        if event.type == "payment.completed" or status == "succeeded":
            return PaymentNews(ref, "succeeded", _int(obj, "amount_received"))
        if event.type == "payment.failed":
            error = obj.get("last_payment_error")
            message = _str(error, "message") if isinstance(error, dict) else ""
            return PaymentNews(ref, "failed", 0, message or "payment failed")
        return PaymentNews(ref, "", 0)
    status = _str(obj, "status")  # Square: APPROVED, PENDING, COMPLETED, CANCELED, FAILED
    money = obj.get("amount_money") if isinstance(obj.get("amount_money"), dict) else None
    if status == "COMPLETED":
        return PaymentNews(ref, "succeeded", _int(money, "amount"))
    if status in ("FAILED", "CANCELED"):
        return PaymentNews(ref, "failed", 0, f"payment {status.lower()} at square")
    return PaymentNews(ref, "", 0)


_REFUND_STATUS = {"succeeded": "succeeded", "COMPLETED": "succeeded", "failed": "failed",
                  "canceled": "failed", "FAILED": "failed", "REJECTED": "failed"}


def refund_news(event: WebhookEvent) -> list[tuple[str, str]]:
    """(provider refund id, succeeded | failed) of each refund the event settles. Stripe's
    `charge.refunded` carries its charge, with the refunds in `refunds.data`."""
    obj = event.data
    if _str(obj, "object") == "charge":
        listed = obj.get("refunds")
        refunds = listed.get("data") if isinstance(listed, dict) else None
        items = [r for r in refunds or [] if isinstance(r, dict)]
    else:
        items = [obj]
    news = []
    for r in items:
        ref, status = _str(r, "id"), _REFUND_STATUS.get(_str(r, "status"), "")
        if ref and status:
            news.append((ref, status))
    return news


@dataclass(frozen=True, slots=True)
class CardNews:
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True, slots=True)
class MethodNews:
    ref: str  # the provider's id of the saved method
    detached: bool
    card: CardNews | None = None


def method_news(event: WebhookEvent) -> MethodNews | None:
    obj = event.data
    ref = _str(obj, "id")
    if not ref:
        return None
    if event.type in ("payment_method.detached", "card.disabled") or obj.get("enabled") is False:
        return MethodNews(ref, True)
    if event.provider == "stripe":
        card = obj.get("card")
        if not isinstance(card, dict):
            return MethodNews(ref, False)
        return MethodNews(ref, False, CardNews(_str(card, "brand"), _str(card, "last4"),
                                               _int(card, "exp_month"), _int(card, "exp_year")))
    return MethodNews(ref, False, CardNews(
        square.BRANDS.get(_str(obj, "card_brand"), _str(obj, "card_brand").lower()),
        _str(obj, "last_4"), _int(obj, "exp_month"), _int(obj, "exp_year")))


# §4.5 DO: Square's dispute states in our (Stripe's) words.
_SQUARE_DISPUTE = {"INQUIRY_EVIDENCE_REQUIRED": "needs_response",
                   "EVIDENCE_REQUIRED": "needs_response", "PROCESSING": "under_review",
                   "INQUIRY_PROCESSING": "under_review", "WON": "won", "LOST": "lost",
                   "ACCEPTED": "lost", "INQUIRY_CLOSED": "warning_closed"}
# Stripe's own words, and the two that are not ours: a dispute whose charge was refunded
# or that was prevented is over, and its money is not coming back.
_STRIPE_DISPUTE = {"charge_refunded": "lost", "prevented": "won"}


@dataclass(frozen=True, slots=True)
class DisputeNews:
    ref: str  # the provider's dispute id
    payment_ref: str  # the provider's payment it disputes (our intent's `provider_ref`)
    amount: int
    currency: str
    status: str
    reason: str
    evidence_due_by: datetime | None


def dispute_news(event: WebhookEvent) -> DisputeNews | None:
    obj = event.data
    if event.provider == "stripe":
        ref, payment = _str(obj, "id"), _str(obj, "payment_intent")
        status = _STRIPE_DISPUTE.get(_str(obj, "status"), _str(obj, "status"))
        amount, currency = _int(obj, "amount"), _str(obj, "currency")
        details = obj.get("evidence_details")
        due = _int(details if isinstance(details, dict) else None, "due_by")
        due_by = datetime.fromtimestamp(due, UTC) if due else None
    else:
        ref = _str(obj, "dispute_id") or _str(obj, "id")
        disputed = obj.get("disputed_payment")
        payment = _str(disputed, "payment_id") if isinstance(disputed, dict) else ""
        status = _SQUARE_DISPUTE.get(_str(obj, "state"), "")
        money = obj.get("amount_money") if isinstance(obj.get("amount_money"), dict) else None
        amount, currency = _int(money, "amount"), _str(money or {}, "currency")
        due_by = _instant(_str(obj, "due_at"))
    if not ref or not payment or amount <= 0 or not currency:
        return None
    return DisputeNews(ref, payment, amount, currency.lower(), status or "needs_response",
                       _str(obj, "reason").lower(), due_by)


@dataclass(frozen=True, slots=True)
class PayoutNews:
    payout_id: str  # ours: the `payoutId` we put in the metadata when we asked for it
    ref: str  # the provider's
    status: str  # in_transit | paid | failed
    failure_code: str
    failure_message: str


_PAYOUT_STATUSES = {"in_transit": "in_transit", "paid": "paid", "failed": "failed",
                    "sent": "in_transit"}  # Square's SENT


def payout_news(event: WebhookEvent) -> PayoutNews | None:
    """One of our payouts, as the provider reports it; None for the provider's own payouts
    (to the merchant's bank), which carry no id of ours."""
    obj = event.data
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    payout_id = _str(metadata, "payoutId")
    status = _PAYOUT_STATUSES.get(_str(obj, "status").lower(), "")
    if not payout_id or not status:
        return None
    return PayoutNews(payout_id, _str(obj, "id"), status, _str(obj, "failure_code"),
                      _str(obj, "failure_message"))


def _instant(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
