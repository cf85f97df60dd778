"""The event log, pure: what a published event is as a log row and as a webhook's body, and
what a list asks for. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec
from msgspec import UNSET, UnsetType

from contracts.limits import Page
from contracts.webhooks import BillingEvent, EventBody, EventListParams

EVENT_NOT_FOUND = "billing event not found"
# Events payments logs as it makes them (webhooks_in's provider events), in the same
# transaction: its relay, publishing those it forwards, finds them logged.
LOGGED_AS_MADE = "provider."
PAGE = Page(100, 100)  # §6.1: at most 100


class _Published(msgspec.Struct):
    """An event as services publish it (contracts.events.Event), its data left encoded."""

    id: str
    type: str
    objectType: str
    objectId: str
    orgId: str
    livemode: bool
    created: str
    customerId: str | None = None
    data: msgspec.Raw | UnsetType = UNSET
    previousData: msgspec.Raw | UnsetType = UNSET


_decode = msgspec.json.Decoder(_Published).decode
_encode = msgspec.json.Encoder().encode
_decode_body = msgspec.json.Decoder(EventBody).decode
_NULL = b"null"


@dataclass(frozen=True, slots=True)
class Logged:
    """An event as the log keeps it; the store's columns by the same names."""

    id: str
    org_id: str
    livemode: bool
    type: str
    object_type: str
    object_id: str
    customer_id: str
    created_at: datetime
    body: bytes  # EventBody, encoded: what a webhook sends


def read(raw: bytes) -> Logged:
    """The event a stream message carries. Raises msgspec's errors, or ValueError for a
    `created` that is no time, for a message that is no event."""
    e = _decode(raw)
    body = EventBody(id=e.id, type=e.type, objectType=e.objectType, objectId=e.objectId,
                     livemode=e.livemode, created=e.created,
                     customerId=e.customerId or UNSET, data=_present(e.data),
                     previousData=_present(e.previousData))
    return Logged(e.id, e.orgId, e.livemode, e.type, e.objectType, e.objectId,
                  e.customerId or "", datetime.fromisoformat(e.created), _encode(body))


def _present(raw: msgspec.Raw | UnsetType) -> msgspec.Raw | UnsetType:
    return UNSET if raw is UNSET or bytes(raw) == _NULL else raw


@dataclass(frozen=True, slots=True)
class Filter:
    type: str
    object_id: str
    object_type: str
    customer_id: str
    limit: int
    starting_after: str


def wanted(p: EventListParams) -> Filter:
    return Filter(p.type.strip(), p.objectId.strip(), p.objectType.strip(),
                  p.customerId.strip(), PAGE.apply(p.limit, 0)[0], p.startingAfter.strip())


def billing_event(body: bytes, pending: bool) -> BillingEvent:
    b = _decode_body(body)
    return BillingEvent(id=b.id, type=b.type, objectType=b.objectType, objectId=b.objectId,
                        livemode=b.livemode, pending=pending, created=b.created,
                        customerId=b.customerId, data=b.data, previousData=b.previousData)
