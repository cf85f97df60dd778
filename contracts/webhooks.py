"""Billing events and outbound webhooks (payments.md §2.8, §2.9, §6, §7): the event log's
messages, webhook endpoints and their deliveries, the event types an endpoint may ask for,
and the `Commerce-Signature` scheme (§6.4), which receivers and SDKs apply as we do.

Field names are the reference's JSON names; what the reference lacked (deliveries, their
attempts, `livemode`) is additive."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from contracts.common import IdParams, Params
from contracts.endpoint import Endpoint
from contracts.limits import Code, Id, Notes, UserId

# ---- event types (§7) ------------------------------------------------------------------

WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"

# What an endpoint's `events` may name: payments' own events, the provider-normalized types
# the reference stored, and what other services publish. `*` = all.
EVENT_TYPES = frozenset({
    "payment_intent.created", "payment_intent.succeeded", "payment_intent.requires_capture",
    "payment_intent.requires_action", "payment_intent.processing",
    "payment_intent.payment_failed", "payment_intent.canceled",
    "setup_intent.created", "setup_intent.succeeded", "setup_intent.canceled",
    "payment_method.attached", "payment_method.updated", "payment_method.detached",
    "customer.default_payment_method.updated",
    "refund.created", "refund.succeeded", "refund.failed", "refund.updated",
    "dispute.created", "dispute.updated", "dispute.closed", "dispute.resolved",
    "payout.created", "payout.canceled", "payout.paid", "payout.failed",
    "topup.succeeded", "topup.failed",
    "bank_transfer_instruction.created", "bank_transfer.reconciled",
    WEBHOOK_ENDPOINT_DISABLED, "provider_settings.updated",
    # provider-normalized (§1.7.3, §1.8.3)
    "payment.completed", "payment.created", "payment.updated", "payment.failed",
    "customer.created", "customer.updated", "customer.deleted",
    # other services'
    "invoice.created", "invoice.finalized", "invoice.paid", "invoice.voided",
    "invoice.payment_failed", "subscription.created", "subscription.updated",
    "subscription.canceled", "credit_note.created", "spend_alert.triggered",
})
ALL_EVENTS = "*"


# ---- signing (§6.4) --------------------------------------------------------------------

SIGNATURE_HEADER = "Commerce-Signature"
TOLERANCE_S = 300  # how old a signed timestamp a receiver accepts by default


class SignatureError(ValueError):
    """A `Commerce-Signature` that does not prove the body came from us, now."""


def signature(timestamp: int, body: bytes, secret: str) -> str:
    """`v1`: hex HMAC-SHA256 of `<t>.<body>` under the whole `whsec_…` secret."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body,
                    hashlib.sha256).hexdigest()


def sign(timestamp: int, body: bytes, *secrets: str) -> str:
    """The header's value: one `v1` per secret (two while a rotated secret still signs)."""
    return f"t={timestamp}," + ",".join(f"v1={signature(timestamp, body, s)}" for s in secrets)


def verify(header: str, body: bytes, secret: str, *, tolerance_s: int = TOLERANCE_S,
           now: float | None = None) -> int:
    """The signed timestamp, once one of the header's `v1`s proves `body` was signed with
    `secret` no more than `tolerance_s` ago (0: any age). Parts are `key=value`, split at
    the first `=` and trimmed; the last `t` wins. Raises SignatureError."""
    timestamps, signatures = [], []
    for part in header.split(","):
        key, eq, value = part.partition("=")
        if eq and key.strip() in ("t", "v1") and value.strip():
            (timestamps if key.strip() == "t" else signatures).append(value.strip())
    if not timestamps or not signatures:
        raise SignatureError("invalid signature header format")
    try:
        timestamp = int(timestamps[-1])
    except ValueError:
        raise SignatureError("invalid signature header format") from None
    expected = signature(timestamp, body, secret)
    if not any(hmac.compare_digest(v1.encode(), expected.encode()) for v1 in signatures):
        raise SignatureError("signature verification failed")
    if tolerance_s and abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise SignatureError("signature timestamp outside the tolerance")
    return timestamp


# ---- the event log (§6.1, §6.2) ----------------------------------------------------------


class EventBody(msgspec.Struct, omit_defaults=True):
    """An event as a webhook delivers it (§6.4) and the log shows it: what services
    published, without the organization. `data` passes through undecoded."""

    id: str
    type: str
    objectType: str
    objectId: str
    livemode: bool
    created: str
    customerId: str | UnsetType = UNSET
    data: msgspec.Raw | UnsetType = UNSET
    previousData: msgspec.Raw | UnsetType = UNSET


class BillingEvent(msgspec.Struct, omit_defaults=True):
    id: str
    type: str
    objectType: str
    objectId: str
    livemode: bool
    pending: bool  # a delivery of it is still being tried
    created: str
    customerId: str | UnsetType = UNSET
    data: msgspec.Raw | UnsetType = UNSET
    previousData: msgspec.Raw | UnsetType = UNSET


class EventListParams(Params):
    type: Code = ""
    objectId: Id = ""
    objectType: Code = ""
    customerId: UserId = ""
    limit: int = 0  # ≤ 0: 100; at most 100
    startingAfter: Id = ""



# ---- webhook endpoints (§6.3) ------------------------------------------------------------

URL_CHARS = 2048
Url = Annotated[str, msgspec.Meta(max_length=URL_CHARS)]
EventTypes = Annotated[list[Code], msgspec.Meta(max_length=len(EVENT_TYPES) + 1)]


class WebhookEndpointCreateParams(Params):
    url: Url = ""
    events: EventTypes | None = None  # absent or []: every event
    description: Notes = ""


class WebhookEndpointUpdateParams(Params):
    """A field present is set (`description: ""` clears it); absent, left as it is."""

    id: Id = ""  # from the path
    url: Url | UnsetType = UNSET
    events: EventTypes | UnsetType = UNSET  # []: every event
    status: Code | UnsetType = UNSET  # enabled | disabled
    description: Notes | UnsetType = UNSET



class WebhookEndpointListParams(Params):
    limit: int = 0
    startingAfter: Id = ""


class WebhookEndpoint(msgspec.Struct, omit_defaults=True):
    id: str
    url: str
    status: str  # enabled | disabled
    events: list[str]
    description: str
    created: str
    livemode: bool
    secret: str | UnsetType = UNSET  # the create (and rotate-secret) answer only
    metadata: dict[str, Any] | UnsetType = UNSET


class WebhookEndpointDeleted(msgspec.Struct):
    deleted: bool
    id: str


# ---- deliveries (§6.5) -------------------------------------------------------------------


class WebhookAttempt(msgspec.Struct, omit_defaults=True):
    attempt: int  # 1, 2, …
    at: str
    status: int  # the receiver's HTTP status; 0: no answer
    latencyMs: int
    error: str = ""  # why it is not a success, when it is not
    response: str = ""  # the start of the receiver's answer


class WebhookDelivery(msgspec.Struct, omit_defaults=True):
    id: str
    endpointId: str
    eventId: str
    eventType: str
    status: str  # pending | delivered | failed | canceled
    attemptCount: int
    created: str
    livemode: bool
    nextAttempt: str | UnsetType = UNSET  # while pending
    deliveredAt: str | UnsetType = UNSET
    lastAttempt: WebhookAttempt | UnsetType = UNSET  # in lists
    attempts: list[WebhookAttempt] | UnsetType = UNSET  # when read by id


class WebhookDeliveryListParams(Params):
    id: Id = ""  # the endpoint, from the path
    status: Code = ""
    eventId: Id = ""
    limit: int = 0
    startingAfter: Id = ""


class WebhookDeliveryIdParams(Params):
    id: Id = ""  # the endpoint, from the path
    deliveryId: Id = ""


# ---- endpoints ---------------------------------------------------------------------------

EVENT_LIST = Endpoint("billing.payments.event.list", EventListParams, list[BillingEvent])
EVENT_GET = Endpoint("billing.payments.event.get", IdParams, BillingEvent)

WEBHOOK_ENDPOINT_CREATE = Endpoint("billing.payments.webhook_endpoint.create",
                                   WebhookEndpointCreateParams, WebhookEndpoint)
WEBHOOK_ENDPOINT_LIST = Endpoint("billing.payments.webhook_endpoint.list",
                                 WebhookEndpointListParams, list[WebhookEndpoint])
WEBHOOK_ENDPOINT_GET = Endpoint("billing.payments.webhook_endpoint.get",
                                IdParams, WebhookEndpoint)
WEBHOOK_ENDPOINT_UPDATE = Endpoint("billing.payments.webhook_endpoint.update",
                                   WebhookEndpointUpdateParams, WebhookEndpoint)
WEBHOOK_ENDPOINT_ROTATE_SECRET = Endpoint("billing.payments.webhook_endpoint.rotate_secret",
                                          IdParams, WebhookEndpoint)
WEBHOOK_ENDPOINT_DELETE = Endpoint("billing.payments.webhook_endpoint.delete",
                                   IdParams, WebhookEndpointDeleted)

WEBHOOK_DELIVERY_LIST = Endpoint("billing.payments.webhook_delivery.list",
                                 WebhookDeliveryListParams, list[WebhookDelivery])
WEBHOOK_DELIVERY_GET = Endpoint("billing.payments.webhook_delivery.get",
                                WebhookDeliveryIdParams, WebhookDelivery)
WEBHOOK_DELIVERY_REDELIVER = Endpoint("billing.payments.webhook_delivery.redeliver",
                                      WebhookDeliveryIdParams, WebhookDelivery)
