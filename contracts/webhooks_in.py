"""Inbound provider webhooks (payments.md §5): what the gateway hands payments for
`POST /billing/webhooks/{provider}` — the raw body and the signature headers, unchanged;
the provider's signature is the only credential, checked by payments."""

from __future__ import annotations

import msgspec

from contracts.endpoint import Endpoint
from contracts.envelope import Reply, Request

# The most the gateway takes (413 beyond): with base64 on the bus it stays well inside
# NATS's 1 MB message limit. Provider events are a few KiB.
WEBHOOK_BODY_BYTES = 256 * 1024

# The signature headers the gateway passes on, in the reference's order of preference
# (§5.2, with Square's added right after Stripe's). Nothing else of the request travels.
SIGNATURE_HEADERS = ("Stripe-Signature", "X-Square-Hmacsha256-Signature",
                     "Paypal-Transmission-Sig", "X-Adyen-Signature", "X-Paypal-Auth-Algo",
                     "X-CC-Webhook-Signature", "X-Signature")


class WebhookIngestParams(msgspec.Struct, forbid_unknown_fields=True):
    """The scope names the organization the delivery is for (§5.5): the one in the URL
    (`/webhooks/{provider}/{org}`, `orgNamed`), else the platform's — unless payments finds
    the event's provider account in an organization's settings. Its mode is not known
    before the signature is checked: the secret that verifies decides it."""

    provider: str  # the URL's, as sent (payments lower-cases and checks it)
    body: bytes  # exactly as received
    headers: dict[str, str]  # the signature headers present, by their names above
    url: str  # the notification URL Square signs (SQUARE_WEBHOOK_URL, else the request's)
    orgNamed: bool = False  # the URL named the organization: it wins over the account


class WebhookReceived(msgspec.Struct, omit_defaults=True):
    """The reference's 200 body; `duplicate` on a redelivery (which changes nothing)."""

    received: bool
    type: str
    id: str
    duplicate: bool = False


WEBHOOK_INGEST = Endpoint("billing.payments.webhook.ingest", WebhookIngestParams,
                          WebhookReceived)


class WebhookIngestBatch(msgspec.Struct, forbid_unknown_fields=True):
    """Deliveries the gateway received at about the same time, each with its own scope, in
    one bus request (the request's own scope is the first's, with the earliest deadline):
    one round trip instead of one each. Each is answered as `WEBHOOK_INGEST` answers it."""

    deliveries: list[Request[WebhookIngestParams]]


# The replies, one per delivery in order: each a `WebhookReceived` or its refusal.
WEBHOOK_INGEST_BATCH = Endpoint("billing.payments.webhook.ingest_batch", WebhookIngestBatch,
                                list[Reply])
