"""The payment provider interface (payments.md §1.1) and the shapes that cross it.

Every provider (Stripe, Square, offline) implements `Provider`. Every call that changes
something at the provider carries `idempotency_key`, derived by the caller from our object
id and the operation (`provider_key`), so a retried request can never charge twice. Amounts
are integers in the currency's minor unit; currencies are lower-case ISO codes on this side
of the interface (an adapter converts to what its provider wants).

A provider answers with a result or raises `ProviderError`: `declined` for a refusal of
the payment itself (card declined, insufficient funds: final, the same request always gets
it), `unavailable` for a provider that could not be reached or failed (5xx, timeout: the
outcome is unknown or transient, and the caller keeps the intent retryable).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, Protocol

import msgspec

ProviderName = Literal["stripe", "square", "offline"]


def provider_key(org_id: str, livemode: bool, operation: str, object_id: str,
                 attempt: int = 0) -> str:
    """The idempotency key of one logical provider call (conventions §10.7): the same
    operation on the same object is the same call, however often it is retried. 42
    characters: within Square's 45."""
    digest = hashlib.sha256(
        f"{org_id}|{int(livemode)}|{operation}|{object_id}|{attempt}".encode()).hexdigest()
    return "bl" + digest[:40]


class PaymentRequest(msgspec.Struct, kw_only=True, frozen=True):
    amount: int
    currency: str
    idempotency_key: str
    token: str = ""  # a provider payment method id, card token or nonce
    customer_id: str = ""  # the provider's customer id, when known
    description: str = ""
    order_id: str = ""
    metadata: dict[str, str] = {}


class PaymentResult(msgspec.Struct, kw_only=True, frozen=True):
    """`status`: succeeded | requires_capture | requires_action | processing."""

    status: str
    transaction_id: str  # the provider's payment id (Stripe: the PaymentIntent `pi_…`)
    amount: int  # captured so far (`requires_capture`: the amount authorized)
    fee: int = 0
    client_secret: str = ""  # `requires_action`: for the customer's browser


class RefundRequest(msgspec.Struct, kw_only=True, frozen=True):
    transaction_id: str
    amount: int
    currency: str
    idempotency_key: str
    reason: str = ""


class RefundResult(msgspec.Struct, kw_only=True, frozen=True):
    """`status`: succeeded | pending | failed."""

    refund_id: str
    status: str


class CardDetails(msgspec.Struct, kw_only=True, frozen=True):
    """What we keep of a card: never its number or security code."""

    brand: str = ""
    last4: str = ""
    exp_month: int = 0
    exp_year: int = 0


class SavedMethod(msgspec.Struct, kw_only=True, frozen=True):
    """A payment method the provider accepted (attached to the customer: verified)."""

    provider_ref: str  # the provider's id of the method (`pm_…`, a Square card id)
    customer_ref: str = ""  # the provider's customer it is attached to
    type: str = "card"
    card: CardDetails | None = None


class SetupResult(msgspec.Struct, kw_only=True, frozen=True):
    """`status`: succeeded | requires_action | processing."""

    status: str
    setup_id: str
    method: SavedMethod | None = None
    client_secret: str = ""


class WebhookEvent(msgspec.Struct, kw_only=True, frozen=True):
    id: str  # the provider's event id
    type: str  # normalized (payments.md §1.7.3, §1.8.3)
    provider: ProviderName
    data: dict[str, Any]  # the object the event is about (Square's unwrapped)
    timestamp: int  # Unix seconds
    provider_type: str = ""  # the type as the provider wrote it
    account: str = ""  # the provider account it came from (Connect `account`, Square merchant)
    livemode: bool | None = None  # what the event says of its mode (Stripe), if anything


class ProviderError(Exception):
    """`kind`: declined (final) | invalid (our request was wrong) | unavailable (retry)."""

    def __init__(self, provider: ProviderName, kind: str, code: str, message: str):
        super().__init__(message)
        self.provider = provider
        self.kind = kind
        self.code = code  # the provider's own code (decline_code, errors[].code, ...)
        self.message = message


class Provider(Protocol):
    name: ProviderName

    async def charge(self, req: PaymentRequest) -> PaymentResult:
        """Authorize and capture in one step."""

    async def authorize(self, req: PaymentRequest) -> PaymentResult:
        """A hold only (`requires_capture`)."""

    async def capture(self, transaction_id: str, amount: int, idempotency_key: str,
                      ) -> PaymentResult:
        """Capture `amount` (≤ authorized; 0 = all) of a hold."""

    async def cancel(self, transaction_id: str, idempotency_key: str) -> None:
        """Release a hold that was not captured."""

    async def refund(self, req: RefundRequest) -> RefundResult: ...

    async def retrieve_payment(self, transaction_id: str) -> PaymentResult:
        """The payment as the provider knows it now, by its id (the payment janitor's
        question: nothing is charged). One that failed or was canceled raises
        `ProviderError(kind="declined")`."""

    async def retrieve_refund(self, refund_id: str) -> RefundResult:
        """The refund as the provider knows it now, by its id (nothing is refunded)."""

    async def create_customer(self, email: str, name: str, idempotency_key: str) -> str:
        """The provider's id of a new customer."""

    async def attach_method(self, customer_ref: str, token: str, idempotency_key: str,
                            ) -> SavedMethod:
        """Save a method (token or nonce) on the customer; a refused card raises
        `ProviderError(kind="declined")`."""

    async def detach_method(self, method_ref: str, idempotency_key: str) -> None: ...

    async def setup(self, customer_ref: str, token: str, idempotency_key: str,
                    ) -> SetupResult:
        """Confirm a setup intent: save the method for later payments."""

    async def submit_dispute_evidence(self, dispute_ref: str, evidence: dict[str, str],
                                      idempotency_key: str) -> None:
        """Send a dispute's evidence (Stripe's field names) and submit it for review."""

    async def accept_dispute(self, dispute_ref: str, idempotency_key: str) -> None:
        """Close a dispute by accepting it: the disputed amount is lost."""

    def verify_webhook(self, payload: bytes, headers: dict[str, str], secret: str,
                       url: str = "") -> WebhookEvent:
        """The event, if the signature is valid; else raises `ProviderError(kind="invalid")`."""

    async def close(self) -> None:
        """Release the client's connections (the service is stopping, or the credentials
        it was built with changed)."""
