"""Domain events: what services publish to JetStream through their transactional outbox
(conventions §10.10). Consumers deduplicate by `id`; it is also the `Nats-Msg-Id`."""

from __future__ import annotations

from typing import Any

import msgspec

STREAM = "BILLING_EVENTS"
SUBJECT_PREFIX = "billing.events."  # + the event type, e.g. billing.events.invoice.paid


def subject(event_type: str) -> str:
    return SUBJECT_PREFIX + event_type


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
