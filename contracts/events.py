"""Domain events: what services publish to JetStream through their transactional outbox
(conventions §10.10). Consumers deduplicate by `id`; it is also the `Nats-Msg-Id`."""

from __future__ import annotations

from typing import Any

import msgspec

STREAM = "BILLING_EVENTS"
SUBJECT_PREFIX = "billing.events."  # + the event type, e.g. billing.events.invoice.paid


# The services that publish events, and the kinds of event each publishes (a type's first
# token: `invoice` for `invoice.paid`). A service's outbox refuses a kind that is not its
# own, so a subject filter made of kinds is complete: payments' event log logs payments' own
# events as its relay publishes them, and reads only the others' from the stream.
SERVICES = ("ledger", "metering", "invoicing", "payments", "subscriptions")
PUBLISHERS = {
    "spend_alert": "ledger",
    "invoice": "invoicing",
    "credit_note": "invoicing",
    "customer_balance": "invoicing",
    "subscription": "subscriptions",
    "subscription_item": "subscriptions",
    "subscription_schedule": "subscriptions",
    "payment_intent": "payments",
    "setup_intent": "payments",
    "payment_method": "payments",
    "customer": "payments",  # customer.default_payment_method.updated
    "topup": "payments",
    "refund": "payments",
    "dispute": "payments",
    "payout": "payments",
    "bank_transfer": "payments",
    "bank_transfer_instruction": "payments",
    "provider": "payments",  # provider events it receives (webhooks_in)
    "provider_settings": "payments",
    "webhook_endpoint": "payments",
}


def subject(event_type: str) -> str:
    return SUBJECT_PREFIX + event_type


def publisher(event_type: str) -> str | None:
    """The service that publishes events of this type (None: no service's)."""
    return PUBLISHERS.get(event_type.split(".", 1)[0])


def published_by_others(service: str) -> tuple[str, ...]:
    """The subjects of every event the other services publish."""
    return tuple(subject(kind + ".>") for kind, by in PUBLISHERS.items() if by != service)


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str  # evt_…
    type: str  # <object_type>.<event>, e.g. spend_alert.triggered
    objectType: str
    objectId: str
    customerId: str | None = None
    orgId: str
    livemode: bool
    created: str  # RFC 3339, UTC
    data: Any  # the object after the change (and any event-specific fields)
    previousData: Any = None  # changed fields before the change, when the event has them
