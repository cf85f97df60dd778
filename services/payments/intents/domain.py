"""Payment and setup intents, pure: validation and defaults, the PaymentIntent and
SetupIntent state machines (payments.md §2.1, §2.2) and capture amounts (§8.2). No I/O; a
refusal is a `Failure`. (Decline messages, §1.10, are the providers':
`providers/declines.py`.)

Illegal transitions are 409 (the request conflicts with the intent's state); the messages
are the reference's."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from contracts.errors import conflict, invalid
from contracts.payments import PaymentIntentCreateParams
from contracts.rules import require_user
from services.payments.common import currency
from services.payments.providers.base import PaymentResult

REQUIRES_PAYMENT_METHOD = "requires_payment_method"
REQUIRES_CONFIRMATION = "requires_confirmation"
REQUIRES_ACTION = "requires_action"
PROCESSING = "processing"
REQUIRES_CAPTURE = "requires_capture"
SUCCEEDED = "succeeded"
CANCELED = "canceled"
STATUSES = (REQUIRES_PAYMENT_METHOD, REQUIRES_CONFIRMATION, REQUIRES_ACTION, PROCESSING,
            REQUIRES_CAPTURE, SUCCEEDED, CANCELED)

CONFIRMABLE = frozenset({REQUIRES_PAYMENT_METHOD, REQUIRES_CONFIRMATION, REQUIRES_ACTION})
FINAL = frozenset({SUCCEEDED, CANCELED})

INTENT_NOT_FOUND = "payment intent not found"
METHOD_REQUIRED = "payment method is required to confirm"


@dataclass(frozen=True, slots=True)
class Intent:
    """What the state machine reads and changes; the store's columns by the same names."""

    status: str
    amount: int
    currency: str
    capture_method: str
    payment_method_id: str = ""
    amount_capturable: int = 0
    amount_received: int = 0
    provider_ref: str = ""
    provider_type: str = ""
    last_error: str = ""
    client_secret: str = ""
    cancellation_reason: str = ""
    canceled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewIntent:
    customer_id: str
    intent: Intent
    confirmation_method: str
    setup_future_usage: str
    description: str
    receipt_email: str
    invoice_id: str
    metadata: dict[str, Any] | None


def _method_choice(raw: str, field: str) -> str:
    value = raw.strip() or "automatic"
    if value not in ("automatic", "manual"):
        raise invalid(f"{field} must be automatic or manual", field)
    return value


def new_intent(p: PaymentIntentCreateParams) -> NewIntent:
    if p.amount <= 0:  # amount first, as the reference
        raise invalid("amount must be positive", "amount")
    customer = require_user(p.customerId, "customerId is required", "customerId")
    pm = p.paymentMethodId.strip()
    intent = Intent(status=REQUIRES_CONFIRMATION if pm else REQUIRES_PAYMENT_METHOD,
                    amount=p.amount, currency=currency(p.currency),
                    capture_method=_method_choice(p.captureMethod, "captureMethod"),
                    payment_method_id=pm)
    return NewIntent(customer, intent,
                     _method_choice(p.confirmationMethod, "confirmationMethod"),
                     p.setupFutureUsage.strip(), p.description, p.receiptEmail.strip(),
                     p.invoiceId.strip(), p.metadata)


# The two state machines share their confirm, decline and cancel steps.
_State = TypeVar("_State", "Intent", "Setup")


def _begin(x: _State, confirmable: frozenset[str], kind: str, payment_method_id: str,
           ) -> _State:
    """The model step of a confirm: → processing, with the method given (or the stored one)."""
    if x.status not in confirmable:
        raise conflict(f"cannot confirm {kind} in status {x.status}")
    pm = payment_method_id.strip() or x.payment_method_id
    if not pm:
        raise invalid(METHOD_REQUIRED, "paymentMethodId")
    return dataclasses.replace(x, status=PROCESSING, payment_method_id=pm, last_error="")


def _failed(x: _State, message: str) -> _State:
    """A provider's decline: back to waiting for a (new) payment method."""
    return dataclasses.replace(x, status=REQUIRES_PAYMENT_METHOD, last_error=message)


def _check_cancel(status: str, kind: str) -> None:
    if status in FINAL:
        raise conflict(f"cannot cancel {kind} in status {status}")


def begin_confirm(i: Intent, payment_method_id: str) -> Intent:
    return _begin(i, CONFIRMABLE, "payment intent", payment_method_id)


def charged(i: Intent, result: PaymentResult, provider: str) -> Intent:
    """A provider's answer to a charge or authorization of `i` (in `processing`)."""
    common = {"provider_ref": result.transaction_id, "provider_type": provider,
              "last_error": ""}
    if result.status == SUCCEEDED:
        return dataclasses.replace(i, status=SUCCEEDED, amount_received=result.amount,
                                   amount_capturable=0, **common)
    if result.status == REQUIRES_CAPTURE:
        return dataclasses.replace(i, status=REQUIRES_CAPTURE, amount_capturable=result.amount,
                                   **common)
    if result.status == REQUIRES_ACTION:
        return dataclasses.replace(i, status=REQUIRES_ACTION,
                                   client_secret=result.client_secret, **common)
    return dataclasses.replace(i, status=PROCESSING, **common)  # settled later (webhook)


def payment_failed(i: Intent, message: str) -> Intent:
    return _failed(i, message)


def capture_amount(i: Intent, requested: int) -> int:
    """§8.2: ≤ 0 means everything capturable; the state is checked first."""
    if i.status != REQUIRES_CAPTURE:
        raise conflict(f"cannot capture payment intent in status {i.status}")
    amount = requested if requested > 0 else i.amount_capturable
    if amount > i.amount_capturable:
        raise invalid(f"capture amount {amount} exceeds capturable {i.amount_capturable}",
                      "amountToCapture")
    return amount


def captured(i: Intent, amount: int) -> Intent:
    return dataclasses.replace(i, status=SUCCEEDED, amount_received=amount,
                               amount_capturable=0)


def cancel(i: Intent, reason: str, at: datetime) -> Intent:
    _check_cancel(i.status, "payment intent")
    return dataclasses.replace(i, status=CANCELED, cancellation_reason=reason,
                               canceled_at=at, amount_capturable=0)


def event_type(status: str) -> str:
    """The event a change to `status` announces (§7)."""
    return "payment_intent." + {REQUIRES_PAYMENT_METHOD: "payment_failed"}.get(status, status)


# ---- setup intents (§2.2) ------------------------------------------------------------------

SETUP_NOT_FOUND = "setup intent not found"
SETUP_CONFIRMABLE = frozenset({REQUIRES_PAYMENT_METHOD, REQUIRES_CONFIRMATION})


@dataclass(frozen=True, slots=True)
class Setup:
    status: str
    payment_method_id: str = ""
    provider_ref: str = ""
    provider_type: str = ""
    last_error: str = ""
    cancellation_reason: str = ""
    canceled_at: datetime | None = None


def new_setup(customer_id: str, payment_method_id: str, usage: str) -> tuple[str, Setup, str]:
    customer = require_user(customer_id, "customerId is required", "customerId")
    use = usage.strip() or "off_session"
    if use not in ("on_session", "off_session"):
        raise invalid("usage must be on_session or off_session", "usage")
    pm = payment_method_id.strip()
    return customer, Setup(REQUIRES_CONFIRMATION if pm else REQUIRES_PAYMENT_METHOD, pm), use


def begin_setup(s: Setup, payment_method_id: str) -> Setup:
    return _begin(s, SETUP_CONFIRMABLE, "setup intent", payment_method_id)


def set_up(s: Setup, provider_ref: str, provider: str) -> Setup:
    return dataclasses.replace(s, status=SUCCEEDED, provider_ref=provider_ref,
                               provider_type=provider, last_error="")


def setup_failed(s: Setup, message: str) -> Setup:
    return _failed(s, message)


def cancel_setup(s: Setup, reason: str, at: datetime) -> Setup:
    _check_cancel(s.status, "setup intent")
    return dataclasses.replace(s, status=CANCELED, cancellation_reason=reason, canceled_at=at)


def setup_event_type(status: str) -> str:
    return "setup_intent." + {REQUIRES_PAYMENT_METHOD: "setup_failed"}.get(status, status)
